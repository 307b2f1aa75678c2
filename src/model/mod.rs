//! Models: backbones, exit heads, placement and cost.
//!
//! The pipeline is description → [`Architecture`] (shapes, cut points, costs; plain data) →
//! [`EarlyExitNet`] (the Burn module).

mod backbones;
pub(crate) mod branched;
pub mod cost;
mod heads;
mod imagenet;
pub mod init;
pub mod io;
pub(crate) mod layers;
mod network;
mod placement;

pub use backbones::*;
pub use branched::{BranchPool, BranchSpec, NamedConv};
pub use cost::{Cost, MacConvention, Shape};
pub use heads::*;
pub use layers::{Activation, BN_EPS, Block, BlockSpec, ConvSpec, PoolSpec};
pub use network::*;
pub use placement::*;
