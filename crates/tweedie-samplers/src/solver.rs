//! Restoration methods behind one trait, and the registry that names them.
//!
//! A method is a settings struct implementing [`Solver`] in its own file; one line of the
//! `solvers!` list in `lib.rs` registers it: it becomes a [`Method`] (with its command-line
//! name) and a [`Settings`] variant (serialised as `{"method": name, ...its settings}`).

use crate::{ChainOptions, Denoiser, Observer, Problem, SampleError, SampleOutput};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use tweedie_core::NoiseSource;
use tweedie_core::diffusion::StepVariance;
use tweedie_operators::OperatorSpec;

/// A named set of sampler settings, so that a run reproduces a known reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Preset {
    /// The official DPS code and configs: learned-range variance (σ² = β where the model has
    /// no variance output, guided-diffusion's `fixed_large`), the residual rule
    /// x −= ζ∇‖y − A(x̂0)‖ with `scale` ζ = 0.5 for inpainting and 0.3 for blur and SR, x̂0
    /// clipped to [−1, 1]. The other methods take their papers' defaults.
    #[default]
    Dps,
    /// The problem sheet's formulas: σ² = β, DPS with ζ_t = ζ/‖∇_{x_t}‖A(x̂0) − y‖²‖ (ζ = 1
    /// unless given), Score-ALD with the stabilised update unless the sheet's literal one is
    /// asked for.
    Sheet,
}

impl Preset {
    /// The reverse-step variance of the preset.
    pub fn variance(self) -> StepVariance {
        match self {
            Preset::Sheet => StepVariance::Beta,
            Preset::Dps => StepVariance::Learned,
        }
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Preset::Sheet => "sheet",
            Preset::Dps => "dps",
        })
    }
}

/// What a user chooses, from which every method configures itself: a preset, the operator
/// (for defaults that depend on it, like DPS's ζ), the chain length, and overrides of single
/// settings (`None`: the preset's or the paper's default). A method ignores the knobs it has
/// no use for.
#[derive(Debug, Clone)]
pub struct Knobs {
    /// The preset.
    pub preset: Preset,
    /// The measurement operator.
    pub op: OperatorSpec,
    /// Reverse steps of the chain.
    pub steps: usize,
    /// T, the schedule's number of timesteps (1000).
    pub timesteps: usize,
    /// Guidance / noise-mixing strength ζ (DPS's step size, DiffPIR's ζ).
    pub zeta: Option<f64>,
    /// Regularisation weight λ (DiffPIR's λ).
    pub lambda: Option<f64>,
    /// SDEdit's starting timestep.
    pub t0: Option<usize>,
    /// DPS's step rule.
    pub dps_rule: Option<crate::DpsRule>,
    /// Scale DPS's ζ by T/steps, so that a strided chain's total guidance matches the T-step
    /// chain ζ was set for.
    pub scale_zeta_with_stride: bool,
    /// Score-ALD's update.
    pub ald_rule: Option<crate::AldRule>,
    /// Score-ALD's step multiplier λ.
    pub ald_scale: Option<f64>,
}

impl Knobs {
    /// The knobs of `preset` on `op` with `steps` steps of a T = 1000 schedule, nothing
    /// overridden.
    pub fn new(preset: Preset, op: OperatorSpec, steps: usize) -> Self {
        Self {
            preset,
            op,
            steps,
            timesteps: 1000,
            zeta: None,
            lambda: None,
            t0: None,
            dps_rule: None,
            scale_zeta_with_stride: false,
            ald_rule: None,
            ald_scale: None,
        }
    }
}

/// What a method returns: the sampler's output and the initialisation it shows (SDEdit: the
/// noised x_{t0}; the others: A⁺y or y).
#[derive(Debug, Clone)]
pub struct Solution {
    /// The final sample and any snapshots.
    pub output: SampleOutput,
    /// The initialisation.
    pub initialisation: Tensor<4>,
}

/// A restoration method: its settings (this type) and how it runs on an inverse problem.
pub trait Solver: Sized + Clone + std::fmt::Debug + PartialEq {
    /// Its name in captions and reports ("DDNM").
    const TITLE: &'static str;
    /// Other command-line names it answers to.
    const ALIASES: &'static [&'static str] = &[];

    /// Its settings for the user's `knobs` (checked); adjustments worth telling the user go
    /// into `notes`.
    fn configure(knobs: &Knobs, notes: &mut Vec<String>) -> Result<Self, SampleError>;

    /// Its own settings for captions, e.g. `"λ=7, ζ=0.3"`.
    fn summary(&self) -> String;

    /// Restores `problem` for images of `shape` with the reverse chain of `chain`, drawing from
    /// `noise`.
    fn solve(
        &self,
        den: &Denoiser,
        problem: &Problem,
        shape: [usize; 4],
        chain: &ChainOptions,
        noise: &mut NoiseSource,
        observer: &mut Observer,
    ) -> Result<Solution, SampleError>;
}

/// Checks that `value` is finite and ≥ 0.
pub(crate) fn non_negative(name: &'static str, value: f64) -> Result<f64, SampleError> {
    if value >= 0.0 && value.is_finite() {
        Ok(value)
    } else {
        Err(SampleError::invalid(name, value, "must be finite and ≥ 0"))
    }
}

/// Declares the registered methods: `module::Type = "name"` per line, where `module` is the
/// method's file and `Type` its [`Solver`].
macro_rules! solvers {
    ($( $(#[$doc:meta])* $module:ident :: $ty:ident = $name:literal ),+ $(,)?) => {
        $( mod $module; pub use $module::$ty; )+

        /// Every registered restoration method.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Method {
            $( $(#[$doc])* $ty ),+
        }

        impl Method {
            /// All methods, in registration order.
            pub const ALL: &'static [Method] = &[$(Method::$ty),+];

            /// The command-line and JSON name (`"ddnm"`).
            pub fn name(self) -> &'static str {
                match self { $(Method::$ty => $name),+ }
            }

            /// The name in captions (`"DDNM"`).
            pub fn title(self) -> &'static str {
                match self { $(Method::$ty => <$ty as $crate::Solver>::TITLE),+ }
            }

            /// Other names it answers to.
            pub fn aliases(self) -> &'static [&'static str] {
                match self { $(Method::$ty => <$ty as $crate::Solver>::ALIASES),+ }
            }

            /// Its settings for `knobs` (see [`Solver::configure`]).
            pub fn configure(
                self,
                knobs: &$crate::Knobs,
                notes: &mut Vec<String>,
            ) -> Result<Settings, $crate::SampleError> {
                Ok(match self {
                    $(Method::$ty => Settings::$ty(<$ty as $crate::Solver>::configure(knobs, notes)?)),+
                })
            }
        }

        /// A method with its settings, serialised as `{"method": name, ...settings}`.
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(tag = "method")]
        pub enum Settings {
            $( #[doc = concat!("[`", stringify!($ty), "`].")] #[serde(rename = $name)] $ty($ty) ),+
        }

        impl Settings {
            /// Which method.
            pub fn method(&self) -> Method {
                match self { $(Settings::$ty(_) => Method::$ty),+ }
            }

            /// The method's own settings for captions.
            pub fn summary(&self) -> String {
                match self { $(Settings::$ty(s) => $crate::Solver::summary(s)),+ }
            }

            /// Runs the method (see [`Solver::solve`]).
            pub fn solve(
                &self,
                den: &$crate::Denoiser,
                problem: &$crate::Problem,
                shape: [usize; 4],
                chain: &$crate::ChainOptions,
                noise: &mut tweedie_core::NoiseSource,
                observer: &mut $crate::Observer,
            ) -> Result<$crate::Solution, $crate::SampleError> {
                match self {
                    $(Settings::$ty(s) => $crate::Solver::solve(s, den, problem, shape, chain, noise, observer)),+
                }
            }
        }

        #[cfg(feature = "clap")]
        impl clap::ValueEnum for Method {
            fn value_variants<'a>() -> &'a [Self] {
                Self::ALL
            }
            fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
                Some(
                    clap::builder::PossibleValue::new(self.name())
                        .help(self.title())
                        .aliases(self.aliases().iter().copied()),
                )
            }
        }
    };
}

pub(crate) use solvers;

impl std::fmt::Display for crate::Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.title())
    }
}

impl std::str::FromStr for crate::Method {
    type Err = SampleError;
    fn from_str(s: &str) -> Result<Self, SampleError> {
        crate::Method::ALL
            .iter()
            .copied()
            .find(|m| m.name() == s || m.aliases().contains(&s))
            .ok_or_else(|| {
                let names: Vec<&str> = crate::Method::ALL.iter().map(|m| m.name()).collect();
                SampleError::invalid("method", s, format!("expected one of {}", names.join(", ")))
            })
    }
}

impl Serialize for crate::Method {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for crate::Method {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
