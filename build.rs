//! Generates Rust types for the protobuf files with `protox` as the compiler, so no system
//! `protoc` is needed: the ONNX subset that `earlyexit export` writes (`proto/onnx.proto`,
//! always), the gRPC service (`proto/earlyexit.proto`, feature `serve`) and the Open Inference
//! Protocol (`proto/open_inference_grpc.proto`, vendored, feature `serve`).

fn main() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let onnx = protox::compile(["onnx.proto"], ["proto"]).expect("proto/onnx.proto compiles");
    prost_build::Config::new()
        .compile_fds(onnx)
        .expect("code generation for proto/onnx.proto");
    #[cfg(feature = "serve")]
    {
        for file in ["earlyexit.proto", "open_inference_grpc.proto"] {
            println!("cargo:rerun-if-changed=proto/{file}");
            let fds = protox::compile([file], ["proto"]).unwrap_or_else(|e| panic!("proto/{file} compiles: {e}"));
            tonic_prost_build::configure()
                .compile_fds(fds)
                .unwrap_or_else(|e| panic!("gRPC code generation for proto/{file}: {e}"));
        }
    }
}
