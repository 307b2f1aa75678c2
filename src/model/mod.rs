//! Models: backbones, exit heads, placement and cost.
//!
//! The pipeline is description → [`Architecture`] (shapes, cut points, costs; plain data) →
//! [`EarlyExitNet`] (the Burn module).

mod backbones;
pub mod cost;
mod heads;
pub mod init;
pub mod io;
pub(crate) mod layers;
mod network;
mod placement;

pub use backbones::*;
pub use cost::{Cost, MacConvention, Shape};
pub use heads::*;
pub use layers::{Block, BlockSpec, ConvSpec, PoolSpec};
pub use network::*;
pub use placement::*;
