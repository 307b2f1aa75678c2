//! The CPU kernels' view of a Burn model: weights read to the host and laid out for
//! [`earlyexit_kernels`], shared by the compiled inference path ([`crate::infer::CompiledNet`])
//! and the native training pass ([`crate::train::native`]).

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AvgPool2d, MaxPool2d};
use burn::nn::{BatchNorm, Linear, PaddingConfig2d};
use burn::tensor::Tensor;
use earlyexit_kernels::{Conv, ConvKernel, Dense, Depthwise, Epilogue, Window, oihw_to_taps};

/// A tensor's values on the host, as `f32`.
pub(crate) fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("an f32 tensor converts to f32")
}

/// A parameter's values on the host, as `f32`.
pub(crate) fn host_param<const D: usize>(p: &Param<Tensor<D>>) -> Vec<f32> {
    host(p.val())
}

/// BatchNorm in eval mode as `x·scale + shift`.
pub(crate) fn bn_affine(bn: &BatchNorm) -> (Vec<f32>, Vec<f32>) {
    let gamma = host_param(&bn.gamma);
    let beta = host_param(&bn.beta);
    let mean = host(bn.running_mean.value());
    let var = host(bn.running_var.value());
    let scale: Vec<f32> = gamma
        .iter()
        .zip(&var)
        .map(|(g, v)| g / (v + bn.epsilon as f32).sqrt())
        .collect();
    let shift = beta
        .iter()
        .zip(&mean)
        .zip(&scale)
        .map(|((b, m), s)| b - m * s)
        .collect();
    (scale, shift)
}

/// A convolution's geometry for the kernels: `(cout, cin per group, [kh, kw], stride,
/// [ph, pw])`, or why the kernels have none.
type Geometry = (usize, usize, [usize; 2], usize, [usize; 2]);

fn conv_geometry(conv: &Conv2d) -> std::result::Result<Geometry, &'static str> {
    let [cout, cin, kh, kw] = conv.weight.val().dims();
    if conv.stride[0] != conv.stride[1] || conv.dilation != [1, 1] {
        return Err("not an evenly strided, undilated convolution");
    }
    let pad = match conv.padding {
        PaddingConfig2d::Explicit(t, l, b, r) if t == b && l == r => [t, l],
        PaddingConfig2d::Valid => [0, 0],
        _ => return Err("asymmetric or `same` padding"),
    };
    Ok((cout, cin, [kh, kw], conv.stride[0], pad))
}

/// `bn` (eval mode) folded into weights `w` (`[taps·cin][cout]`, or `[taps][c]` for a
/// depthwise convolution) and bias `b`.
fn fold_bn(w: &mut [f32], b: &mut [f32], bn: &BatchNorm) {
    let (scale, shift) = bn_affine(bn);
    let cout = b.len();
    for row in w.chunks_mut(cout) {
        row.iter_mut().zip(&scale).for_each(|(v, s)| *v *= s);
    }
    for o in 0..cout {
        b[o] = b[o] * scale[o] + shift[o];
    }
}

/// `conv` for the kernels, with `bn` (eval mode) folded into its weights and bias when given;
/// `relu` records whether a ReLU follows. Errors say why the kernels cannot run it (grouped
/// convolutions: see [`depthwise_from_burn`]).
pub(crate) fn conv_from_burn(
    conv: &Conv2d,
    bn: Option<&BatchNorm>,
    relu: bool,
    kernel: ConvKernel,
) -> std::result::Result<Conv, &'static str> {
    if conv.groups != 1 {
        return Err("a grouped convolution");
    }
    let (cout, cin, k, stride, pad) = conv_geometry(conv)?;
    let mut w = oihw_to_taps(&host_param(&conv.weight), cout, cin, k[0] * k[1]);
    let mut b = conv.bias.as_ref().map_or_else(|| vec![0.0; cout], host_param);
    if let Some(bn) = bn {
        fold_bn(&mut w, &mut b, bn);
    }
    Ok(Conv::from_host_rect(cin, cout, k, stride, pad, w, b, relu, kernel))
}

/// A depthwise `conv` (one group per channel) for the kernels, `bn` folded in; `act` its
/// activation.
pub(crate) fn depthwise_from_burn(
    conv: &Conv2d,
    bn: Option<&BatchNorm>,
    act: Epilogue,
) -> std::result::Result<Depthwise, &'static str> {
    let (c, per_group, k, stride, pad) = conv_geometry(conv)?;
    if per_group != 1 || conv.groups != c {
        return Err("a grouped convolution that is not depthwise (the kernels run one group per channel)");
    }
    // `[c][1][kh][kw]` → `[tap][c]`.
    let mut w = oihw_to_taps(&host_param(&conv.weight), c, 1, k[0] * k[1]);
    let mut b = conv.bias.as_ref().map_or_else(|| vec![0.0; c], host_param);
    if let Some(bn) = bn {
        fold_bn(&mut w, &mut b, bn);
    }
    Ok(Depthwise::from_host(c, k, stride, pad, w, b, act))
}

/// A square pooling window, or why the kernels have none.
fn window(
    kernel: [usize; 2],
    stride: [usize; 2],
    padding: &PaddingConfig2d,
    ceil: bool,
) -> std::result::Result<Window, &'static str> {
    let pad = match padding {
        PaddingConfig2d::Explicit(t, l, b, r) if t == l && l == b && b == r => *t,
        PaddingConfig2d::Valid => 0,
        _ => return Err("a pooling window with uneven padding"),
    };
    if kernel[0] != kernel[1] || stride[0] != stride[1] || ceil {
        return Err("a rectangular, unevenly strided or ceil-mode pooling window");
    }
    Ok(Window {
        k: kernel[0],
        stride: stride[0],
        pad,
    })
}

/// `p`'s window for the kernels, or why they cannot run it.
pub(crate) fn max_pool_window(p: &MaxPool2d) -> std::result::Result<Window, &'static str> {
    if p.dilation != [1, 1] {
        return Err("a dilated max pool");
    }
    window(p.kernel_size, p.stride, &p.padding, p.ceil_mode)
}

/// `p`'s window for the kernels, or why they cannot run it.
pub(crate) fn avg_pool_window(p: &AvgPool2d) -> std::result::Result<Window, &'static str> {
    window(p.kernel_size, p.stride, &p.padding, p.ceil_mode)
}

/// `l` for the kernels.
pub(crate) fn dense_from_burn(l: &Linear) -> Dense {
    let [din, dout] = l.weight.val().dims();
    let b = l.bias.as_ref().map_or_else(|| vec![0.0; dout], host_param);
    Dense::from_host(din, dout, host_param(&l.weight), b)
}
