//! `[compression]`: codings, preference, types, minimum size and levels,
//! validated into a [`CompressionPlan`].

use serde::Deserialize;

use super::plan::Errors;
use super::units::ByteSize;
use crate::compression::{Coding, CompressionPlan, TypePattern};

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CompressionSection {
    /// `false` turns compression off everywhere (routes may also say `compress = false`).
    pub enabled: Option<bool>,
    /// Codings offered, most preferred first (default `["br", "zstd", "gzip"]`).
    pub codings: Option<Vec<String>>,
    /// Media types compressed (replaces the default list), e.g. `"text/*"`,
    /// `"application/json"`, `"application/*+json"`.
    pub types: Option<Vec<String>>,
    /// Responses with a known length below this are sent as they are.
    pub min_size: Option<ByteSize>,
    pub brotli_level: Option<u32>,
    pub zstd_level: Option<i32>,
    pub gzip_level: Option<u32>,
}

pub(super) fn compile(errs: &mut Errors, c: CompressionSection) -> CompressionPlan {
    let mut plan = CompressionPlan::default();
    if let Some(on) = c.enabled {
        plan.enabled = on;
    }
    if let Some(codings) = c.codings {
        let mut prefer = Vec::new();
        for (i, name) in codings.iter().enumerate() {
            let key = format!("compression.codings[{i}]");
            match Coding::from_token(name) {
                Some(Coding::Identity) | None => {
                    errs.push(key, format!("\"{name}\" is not one of br, zstd, gzip"))
                }
                Some(c) if prefer.contains(&c) => {
                    errs.push(key, format!("\"{name}\" is listed twice"))
                }
                Some(c) => prefer.push(c),
            }
        }
        plan.prefer = prefer;
    }
    if let Some(types) = c.types {
        let mut list = Vec::new();
        for (i, t) in types.iter().enumerate() {
            match TypePattern::parse(t) {
                Ok(p) => list.push(p),
                Err(e) => errs.push(format!("compression.types[{i}]"), e),
            }
        }
        plan.types = list;
    }
    if let Some(s) = c.min_size {
        plan.min_size = s.0;
    }
    if let Some(l) = c.brotli_level {
        if l > 11 {
            errs.push("compression.brotli_level", "must be 0..=11");
        }
        plan.levels.brotli = l;
    }
    if let Some(l) = c.zstd_level {
        if !(1..=19).contains(&l) {
            errs.push("compression.zstd_level", "must be 1..=19");
        }
        plan.levels.zstd = l;
    }
    if let Some(l) = c.gzip_level {
        if !(1..=9).contains(&l) {
            errs.push("compression.gzip_level", "must be 1..=9");
        }
        plan.levels.gzip = l;
    }
    plan
}
