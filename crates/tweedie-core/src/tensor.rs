//! Small tensor helpers shared by the crates (host round-trips, norms).

use burn::tensor::{Device, Tensor, TensorData};

/// Copies a tensor to the host as `f32` values (row-major).
pub fn to_vec<const D: usize>(x: &Tensor<D>) -> Vec<f32> {
    x.to_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("float tensor converts to f32")
}

/// Builds a tensor from row-major `f32` values.
pub fn from_vec<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// The single value of a one-element tensor.
pub fn scalar<const D: usize>(x: &Tensor<D>) -> f64 {
    let v = to_vec(x);
    assert_eq!(v.len(), 1, "scalar() needs a one-element tensor");
    v[0] as f64
}

/// Squared L2 norm of each batch item of `[B, …]`, as a `[B]` host vector.
pub fn sq_norm_per_item(x: &Tensor<4>) -> Vec<f64> {
    let [b, ..] = x.dims();
    let v = to_vec(
        &x.clone()
            .powf_scalar(2.0)
            .reshape([b as i32, -1])
            .sum_dim(1),
    );
    v.into_iter().map(|a| a as f64).collect()
}

/// True when every value is finite (checked on the device; only two booleans are read back).
pub fn all_finite<const D: usize>(x: &Tensor<D>) -> bool {
    !(x.clone().is_nan().any().into_scalar::<bool>()
        || x.clone().is_inf().any().into_scalar::<bool>())
}

/// The largest |value| (checked on the device; one number is read back). NaN and ±Inf give
/// +Inf, so a single comparison catches every kind of blow-up.
pub fn max_abs<const D: usize>(x: &Tensor<D>) -> f64 {
    if !all_finite(x) {
        return f64::INFINITY;
    }
    let n = x.shape().num_elements();
    x.clone().abs().reshape([n]).max().into_scalar::<f32>() as f64
}
