//! `sampler_order`: the order of the warpers, transformers' by default, llama.cpp's chain by
//! name, or any order given as a comma-separated list of stage names.

use super::{
    DynamicTemperature, EpsilonCutoff, EtaCutoff, MinP, Pipeline, PipelineConfig, Temperature,
    TopH, TopK, TopNSigma, TopP, Typical, Xtc,
};
use crate::error::{CoreError, Result};
use crate::settings::{FlagOrText, Setting, SettingsSource};

/// One warper a [`SamplerOrder`] can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warper {
    Temperature,
    TopNSigma,
    TopH,
    TopK,
    TopP,
    MinP,
    Typical,
    Epsilon,
    Eta,
    Xtc,
}

const NAMES: &[(&str, Warper)] = &[
    ("temperature", Warper::Temperature),
    ("top_n_sigma", Warper::TopNSigma),
    ("top_h", Warper::TopH),
    ("top_k", Warper::TopK),
    ("top_p", Warper::TopP),
    ("min_p", Warper::MinP),
    ("typical_p", Warper::Typical),
    ("epsilon_cutoff", Warper::Epsilon),
    ("eta_cutoff", Warper::Eta),
    ("xtc", Warper::Xtc),
];

/// The warper order: `None` in the config is transformers' (with the fused fast paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamplerOrder(pub Vec<Warper>);

impl SamplerOrder {
    /// llama.cpp's default chain (`common/common.h`): top-nσ, top-k, typical, top-p,
    /// min-p, XTC, temperature.
    pub fn llama_cpp() -> Self {
        use Warper::*;
        SamplerOrder(vec![TopNSigma, TopK, Typical, TopP, MinP, Xtc, Temperature])
    }

    /// transformers' order with ferrogen's stages placed (docs/samplers.md).
    pub fn transformers() -> Self {
        use Warper::*;
        SamplerOrder(vec![
            Temperature,
            TopNSigma,
            TopH,
            TopK,
            TopP,
            MinP,
            Typical,
            Epsilon,
            Eta,
            Xtc,
        ])
    }

    /// `"transformers"`, `"llama.cpp"`, or stage names separated by commas.
    pub fn parse(text: &str) -> Result<Self> {
        match text.trim() {
            "transformers" => return Ok(Self::transformers()),
            "llama.cpp" | "llama_cpp" => return Ok(Self::llama_cpp()),
            _ => {}
        }
        let mut order = Vec::new();
        for name in text.split(',').map(str::trim) {
            let Some(&(_, w)) = NAMES.iter().find(|(n, _)| *n == name) else {
                let known: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
                return Err(CoreError::invalid(
                    "sampler_order",
                    format!(
                        "unknown stage {name:?}: use 'transformers', 'llama.cpp' or names from {}",
                        known.join(", ")
                    ),
                ));
            };
            if order.contains(&w) {
                return Err(CoreError::invalid(
                    "sampler_order",
                    format!("{name:?} is named twice"),
                ));
            }
            order.push(w);
        }
        Ok(SamplerOrder(order))
    }

    /// Appends the configured stages in this order (a stage not named does not run, as in
    /// llama.cpp's chain; one named but left neutral in the config does not either).
    pub fn push_warpers(&self, cfg: &PipelineConfig, keep: usize, p: &mut Pipeline) {
        let cut = |c: f64| c > 0.0 && c < 1.0;
        for w in &self.0 {
            match w {
                Warper::Temperature if cfg.dynatemp_range > 0.0 => {
                    p.push_row(Box::new(DynamicTemperature::new(
                        cfg.temperature,
                        cfg.dynatemp_range,
                        cfg.dynatemp_exponent,
                    )))
                }
                Warper::Temperature if cfg.temperature != 1.0 => {
                    p.push_row(Box::new(Temperature::new(cfg.temperature)))
                }
                Warper::TopNSigma if cfg.top_n_sigma.is_some() => {
                    p.push_row(Box::new(TopNSigma::new(cfg.top_n_sigma.unwrap_or(1.0))))
                }
                Warper::TopH if cfg.top_h.is_some() => {
                    p.push_row(Box::new(TopH::new(cfg.top_h.unwrap_or(1.0))))
                }
                Warper::TopK if cfg.top_k != 0 => p.push_row(Box::new(TopK::new(cfg.top_k, keep))),
                Warper::TopP if cfg.top_p < 1.0 => p.push_row(Box::new(TopP::new(cfg.top_p, keep))),
                Warper::MinP if cfg.min_p.is_some() => {
                    p.push_row(Box::new(MinP::new(cfg.min_p.unwrap_or(0.0), keep)))
                }
                Warper::Typical if cfg.typical_p < 1.0 => {
                    p.push_row(Box::new(Typical::new(cfg.typical_p, keep)))
                }
                Warper::Epsilon if cut(cfg.epsilon_cutoff) => {
                    p.push_row(Box::new(EpsilonCutoff::new(cfg.epsilon_cutoff, keep)))
                }
                Warper::Eta if cut(cfg.eta_cutoff) => {
                    p.push_row(Box::new(EtaCutoff::new(cfg.eta_cutoff, keep)))
                }
                Warper::Xtc if cfg.xtc_probability > 0.0 => p.push_row(Box::new(Xtc::new(
                    cfg.xtc_probability,
                    cfg.xtc_threshold,
                    keep,
                ))),
                _ => {}
            }
        }
    }
}

impl Setting for SamplerOrder {
    fn read(source: &dyn SettingsSource, name: &'static str) -> Result<Option<Self>> {
        match source.flag_or_text(name)? {
            None => Ok(None),
            Some(FlagOrText::Text(t)) => Self::parse(&t).map(Some),
            Some(FlagOrText::Flag(_)) => Err(CoreError::WrongType {
                name,
                expected: "'transformers', 'llama.cpp' or comma-separated stage names",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_presets_and_lists() {
        assert_eq!(
            SamplerOrder::parse("llama.cpp").unwrap(),
            SamplerOrder::llama_cpp()
        );
        assert_eq!(
            SamplerOrder::parse("top_k, temperature").unwrap().0,
            [Warper::TopK, Warper::Temperature]
        );
        assert!(SamplerOrder::parse("top_k,nope").is_err());
        assert!(SamplerOrder::parse("top_k,top_k").is_err());
    }

    #[test]
    fn llama_cpp_order_builds_its_chain() {
        let cfg = PipelineConfig {
            do_sample: true,
            temperature: 0.7,
            top_k: 40,
            top_p: 0.9,
            min_p: Some(0.05),
            xtc_probability: 0.5,
            sampler_order: Some(SamplerOrder::llama_cpp()),
            ..Default::default()
        };
        assert_eq!(
            cfg.build_warpers(1).names(),
            [
                "NanToNegInf",
                "TopKLogitsWarper",
                "TopPLogitsWarper",
                "MinPLogitsWarper",
                "XTC",
                "TemperatureLogitsWarper"
            ]
        );
        let transformers = PipelineConfig {
            sampler_order: Some(SamplerOrder::transformers()),
            ..cfg.clone()
        };
        let default = PipelineConfig {
            sampler_order: None,
            ..cfg
        };
        assert_eq!(
            transformers.build_warpers(1).names(),
            default.build_warpers(1).names(),
            "the transformers preset is the default order"
        );
    }
}
