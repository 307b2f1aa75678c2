//! Generates the gRPC code for `proto/earlyexit.proto` (feature `serve`), with `protox` as the
//! protobuf compiler, so no system `protoc` is needed.

fn main() {
    #[cfg(feature = "serve")]
    {
        println!("cargo:rerun-if-changed=proto/earlyexit.proto");
        let fds = protox::compile(["earlyexit.proto"], ["proto"]).expect("proto/earlyexit.proto compiles");
        tonic_prost_build::configure()
            .compile_fds(fds)
            .expect("gRPC code generation for proto/earlyexit.proto");
    }
}
