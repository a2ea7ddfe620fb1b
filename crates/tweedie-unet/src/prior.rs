//! A loaded network with the noise schedule it was trained on: guided-diffusion's ADM or a
//! diffusers `UNet2DModel`.

use crate::UNetEps;
use crate::diffusers::DiffusersModel;
use burn::tensor::Tensor;
use serde_json::{Value, json};
use tweedie_core::{EpsModel, NoiseLevel, Schedule};

/// An ε-network and its forward process, whichever format it came from.
// A process holds one or two of these: the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Prior {
    /// A guided-diffusion ADM (tweedie's own models, the DPS FFHQ checkpoint): linear β
    /// 1e-4 → 0.02 over T = 1000, as guided-diffusion trains them.
    Adm {
        /// The network.
        eps: UNetEps,
        /// Its schedule.
        schedule: Schedule,
    },
    /// A diffusers DDPM model, its schedule from its scheduler config.
    Diffusers(DiffusersModel),
}

impl Prior {
    /// An ADM with guided-diffusion's default (linear) schedule.
    pub fn adm(eps: UNetEps) -> Self {
        Prior::Adm {
            eps,
            schedule: Schedule::linear_default(),
        }
    }

    /// The forward process the network was trained on.
    pub fn schedule(&self) -> &Schedule {
        match self {
            Prior::Adm { schedule, .. } => schedule,
            Prior::Diffusers(m) => &m.schedule,
        }
    }

    /// The image side the network works at.
    pub fn image_size(&self) -> usize {
        match self {
            Prior::Adm { eps, .. } => eps.net.config().image_size,
            Prior::Diffusers(m) => m.image_size(),
        }
    }

    /// Number of scalar parameters.
    pub fn num_parameters(&self) -> usize {
        match self {
            Prior::Adm { eps, .. } => eps.net.num_parameters(),
            Prior::Diffusers(m) => m.net.num_parameters(),
        }
    }

    /// The ADM, when this is one (commands that edit an ADM's config need it).
    pub fn as_adm(&self) -> Option<&UNetEps> {
        match self {
            Prior::Adm { eps, .. } => Some(eps),
            Prior::Diffusers(_) => None,
        }
    }

    /// The ADM, mutably, when this is one.
    pub fn as_adm_mut(&mut self) -> Option<&mut UNetEps> {
        match self {
            Prior::Adm { eps, .. } => Some(eps),
            Prior::Diffusers(_) => None,
        }
    }

    /// What a run's JSON records of the network: its format, and for diffusers models the
    /// scheduler settings and what the samplers make of its variance type.
    pub fn describe(&self) -> Value {
        match self {
            Prior::Adm { eps, .. } => json!({
                "format": "guided-diffusion",
                "schedule": "linear β 1e-4 → 0.02, T = 1000",
                "learned_variance": eps.has_learned_variance(),
            }),
            Prior::Diffusers(m) => json!({
                "format": "diffusers UNet2DModel",
                "weights": m.weights.display().to_string(),
                "beta_schedule": m.scheduler.beta_schedule,
                "beta_start": m.scheduler.beta_start,
                "beta_end": m.scheduler.beta_end,
                "num_train_timesteps": m.scheduler.num_train_timesteps,
                "variance_type": m.scheduler.variance_type,
                "variance_note": m.scheduler.variance_note(m.net.config().learned_variance()),
                "scheduler_sampling_options_unused": m.scheduler.sampling_options,
                "learned_variance": m.has_learned_variance(),
            }),
        }
    }

    /// The model as a plain ε-predictor.
    fn model(&self) -> &dyn EpsModel {
        match self {
            Prior::Adm { eps, .. } => eps,
            Prior::Diffusers(m) => m,
        }
    }
}

impl EpsModel for Prior {
    fn predict_eps(&self, x_t: Tensor<4>, level: NoiseLevel) -> Tensor<4> {
        self.model().predict_eps(x_t, level)
    }
    fn predict_eps_and_variance(
        &self,
        x_t: Tensor<4>,
        level: NoiseLevel,
    ) -> (Tensor<4>, Option<Tensor<4>>) {
        self.model().predict_eps_and_variance(x_t, level)
    }
    fn has_learned_variance(&self) -> bool {
        self.model().has_learned_variance()
    }
}
