//! `tweedie-unet`: OpenAI's guided-diffusion UNet ("ADM") ported to burn.
//!
//! One config-driven implementation covers the DPS FFHQ-256 checkpoint (`ffhq_10m.pt`), our
//! small embedded model and any other ADM checkpoint. [`UNetConfig`] reads guided-diffusion's
//! own `create_model` argument names; [`UNet::load`] reads `.pt` state dicts or
//! `.safetensors` files with guided-diffusion's key names and fails with a listing of
//! missing, unexpected and mis-shaped keys; [`UNet::save`] writes safetensors + JSON config.
//! [`diffusers`] loads Hugging Face diffusers `UNet2DModel` folders with their scheduler, and
//! [`Prior`] is either kind of network with its noise schedule.

mod config;
pub mod diffusers;
mod keys;
mod layers;
mod prior;
mod unet;
mod weights;

pub use config::{ConfigError, UNetConfig};
pub use layers::{Export, Init, ParamSource, RandomInit};
pub use prior::Prior;
pub use unet::{UNet, UNetEps, UNetLoadError};
pub use weights::{BoxedSource, WeightError, WeightMap, reference_tensor};
