//! Shape-specialised tract plans, built on demand and kept in a small LRU cache.
//!
//! tract optimizes elementwise ops (bias adds, residual adds, per-token rescales) into fused
//! kernels only when it can prove their sizes, which symbolic `batch`/`sequence` dims defeat:
//! on MiniLM int8 at 128 tokens a symbolic plan measured 56 ms against 34 ms for a plan made
//! for that shape. So the parsed model is kept, and one optimized plan is made per
//! `(rows, sequence)` shape actually run; sequences are rounded up to a bucket so a handful
//! of plans covers every text length. Each plan holds its own packed weights (≈ the int8
//! matmul weights: 11 MB for MiniLM-L6, 4 MB for TinyBERT-4L), hence the bounded cache.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tract_onnx::prelude::*;

use super::Error;

/// How the engine specialises plans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineOptions {
    /// Sequence lengths are padded up to a multiple of this (1 = exact lengths).
    pub sequence_bucket: usize,
    /// Most plans kept at once (per engine, and tract states per session).
    pub plan_cache_size: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            sequence_bucket: 16,
            plan_cache_size: 8,
        }
    }
}

/// The concrete input shape a plan is made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Shape {
    pub rows: usize,
    pub sequence: usize,
}

type Plan = Arc<TypedRunnableModel>;

/// The parsed model and its most recently used plans (most recent last).
pub(super) struct PlanCache {
    model: InferenceModel,
    path: PathBuf,
    pub options: EngineOptions,
    plans: Mutex<Vec<(Shape, Plan)>>,
}

impl PlanCache {
    pub fn new(model: InferenceModel, path: &Path, options: EngineOptions) -> Self {
        PlanCache {
            model,
            path: path.to_path_buf(),
            options,
            plans: Mutex::new(Vec::new()),
        }
    }

    /// The plan for `shape`, optimizing it on first use.
    pub fn get(&self, shape: Shape) -> Result<Plan, Error> {
        if let Some(plan) = self.lookup(shape) {
            return Ok(plan);
        }
        // Optimizing takes 50–250 ms: done outside the lock, so other shapes keep running.
        let plan = self.optimize(shape)?;
        let mut plans = self
            .plans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !plans.iter().any(|(s, _)| *s == shape) {
            if plans.len() >= self.options.plan_cache_size.max(1) {
                plans.remove(0);
            }
            plans.push((shape, plan.clone()));
        }
        Ok(plan)
    }

    fn lookup(&self, shape: Shape) -> Option<Plan> {
        let mut plans = self
            .plans
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let index = plans.iter().position(|(s, _)| *s == shape)?;
        let entry = plans.remove(index);
        let plan = entry.1.clone();
        plans.push(entry);
        Some(plan)
    }

    fn optimize(&self, shape: Shape) -> Result<Plan, Error> {
        let bad = |e: TractError| Error::BadModel {
            path: self.path.clone(),
            source: e.into(),
        };
        let fact = InferenceFact::dt_shape(i64::datum_type(), tvec!(shape.rows, shape.sequence));
        self.model
            .clone()
            .with_input_fact(0, fact.clone())
            .and_then(|m| m.with_input_fact(1, fact))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(bad)
    }
}
