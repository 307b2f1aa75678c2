//! Generates Rust types for the protobuf files with `protox` as the compiler, so no system
//! `protoc` is needed: the ONNX subset that `earlyexit export` writes (`proto/onnx.proto`,
//! always) and the gRPC service (`proto/earlyexit.proto`, feature `serve`).

fn main() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let onnx = protox::compile(["onnx.proto"], ["proto"]).expect("proto/onnx.proto compiles");
    prost_build::Config::new()
        .compile_fds(onnx)
        .expect("code generation for proto/onnx.proto");
    #[cfg(feature = "serve")]
    {
        println!("cargo:rerun-if-changed=proto/earlyexit.proto");
        let fds = protox::compile(["earlyexit.proto"], ["proto"]).expect("proto/earlyexit.proto compiles");
        tonic_prost_build::configure()
            .compile_fds(fds)
            .expect("gRPC code generation for proto/earlyexit.proto");
    }
}
