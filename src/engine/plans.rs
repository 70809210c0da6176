//! Shape-specialised tract plans, built on demand and kept in a small LRU cache, over one
//! shared copy of the weights.
//!
//! tract optimizes elementwise ops (bias adds, residual adds, per-token rescales) into fused
//! kernels only when it can prove their sizes, which symbolic `batch`/`sequence` dims defeat:
//! on MiniLM int8 at 128 tokens a symbolic plan measured 56 ms against 34 ms for a plan made
//! for that shape. So the parsed model is typed and decluttered once with the two dimensions
//! left as symbols (the *source*), and one optimized plan is made per `(rows, sequence)` shape
//! actually run, by binding the symbols in a copy of the source and optimizing that; sequences
//! are rounded up to a length bucket ([`bucket`]) so a handful of plans covers every text
//! length. Each shape is optimized once, by whichever thread asks first (others wait for it);
//! once every bucket a caller needs has its plan, the source can be released
//! ([`PlanCache::release_source`]). Decluttering once, rather than per plan, also spares each
//! plan's optimization the copies tract's axis rewrites make of the weights (10 MB for MiniLM
//! while the parsed weights are still held).
//!
//! Optimizing a plan packs the matmul weights for tract's kernels (≈ the int8 weights: 11 MB
//! for MiniLM-L6, 4 MB for TinyBERT-4L) into the optimized matmul ops themselves, and converts
//! other constants (the embedding tables) afresh; all of it is the same for every sequence
//! length. Each new plan's constants and packed weights are therefore looked up in a pool of
//! those already made (by content: hash, then equality) and replaced by the pooled copy, so
//! every plan shares one copy of the weights and a plan costs only its own graph. This reads
//! tract's optimized ops (`OptMatMul`, `EagerPackedInput`), which are not a stable API: tract is
//! pinned to one version in `Cargo.toml`.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tract_linalg::mmm::EagerPackedInput;
use tract_linalg::pack::PackedFormat;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::dyn_clone;
use tract_onnx::tract_core::ops::konst::Const;
use tract_onnx::tract_core::ops::matmul::optimized::{MatMulOperand, OptMatMul, ProtoFusedSpec};

use super::Error;

/// How the engine specialises plans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineOptions {
    /// The finest length bucket: sequences are padded up to a multiple of this, a step that
    /// doubles each time the length doubles past 8 steps ([`bucket`]).
    pub sequence_bucket: usize,
    /// Most plans kept at once (per engine, and tract states per session).
    pub plan_cache_size: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            sequence_bucket: 16,
            plan_cache_size: 16,
        }
    }
}

/// The length a sequence of `tokens` is padded to: the next multiple of `step` up to 8 steps,
/// of twice `step` up to 16 steps, and so on — with a step of 16, every 16 tokens up to 128,
/// every 32 up to 256, every 64 up to 512. Padding stays under a quarter of the length past the
/// first 8 steps, and a 512-token window needs 16 plans, a 128-token one 8.
pub(super) fn bucket(tokens: usize, step: usize) -> usize {
    let tokens = tokens.max(1);
    let mut step = step.max(1);
    while tokens > step * 8 {
        step *= 2;
    }
    tokens.div_ceil(step) * step
}

/// The buckets [`bucket`] rounds lengths up to `max_tokens` to, shortest first.
pub(super) fn buckets_up_to(max_tokens: usize, step: usize) -> impl Iterator<Item = usize> {
    let last = bucket(max_tokens, step);
    let mut next = Some(bucket(1, step));
    std::iter::from_fn(move || {
        let current = next?;
        next = (current < last).then(|| bucket(current + 1, step));
        Some(current)
    })
}

/// The concrete input shape a plan is made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Shape {
    pub rows: usize,
    pub sequence: usize,
}

type Plan = Arc<TypedRunnableModel>;

/// The decluttered model, its most recently used plans (most recent last) and the constants
/// they share.
pub(super) struct PlanCache {
    /// The model plans are made from; `None` once released ([`PlanCache::release_source`]).
    source: Mutex<Option<Source>>,
    path: PathBuf,
    pub options: EngineOptions,
    plans: Mutex<Plans>,
    /// Signalled whenever a plan's optimization ends, for threads waiting on that shape.
    built: Condvar,
    constants: Mutex<ConstantPool>,
}

/// The cached plans (most recent last) and the shapes some thread is optimizing now.
#[derive(Default)]
struct Plans {
    cached: Vec<(Shape, Plan)>,
    building: Vec<Shape>,
}

/// One copy of each distinct constant of the plans made so far, by content hash: constant
/// tensors (`Const` nodes) and the packed weights optimized matmuls hold inside the op.
#[derive(Default)]
struct ConstantPool {
    tensors: Interned<Tensor>,
    packed: Interned<Blob>,
}

/// Values by content hash, and the addresses of those pooled (a value already pooled, such as a
/// weight pack `weight_packs` handed out again, is found without hashing it).
struct Interned<T> {
    by_hash: HashMap<u64, Vec<Arc<T>>>,
    addresses: std::collections::HashSet<usize>,
}

impl<T> Default for Interned<T> {
    fn default() -> Self {
        Interned {
            by_hash: HashMap::new(),
            addresses: std::collections::HashSet::new(),
        }
    }
}

/// The pooled value equal to `value` in `pool`, pooling `value` if there is none.
fn intern<T: Hash + PartialEq>(pool: &mut Interned<T>, value: &Arc<T>) -> Arc<T> {
    // Pooled values stay alive in the pool, so their addresses stay theirs.
    let address = Arc::as_ptr(value) as usize;
    if pool.addresses.contains(&address) {
        return value.clone();
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    let same_hash = pool.by_hash.entry(hasher.finish()).or_default();
    if let Some(pooled) = same_hash.iter().find(|pooled| ***pooled == **value) {
        return pooled.clone();
    }
    same_hash.push(value.clone());
    pool.addresses.insert(address);
    value.clone()
}

impl ConstantPool {
    /// Points every constant of `model` at its pooled copy.
    fn share(&mut self, model: &mut TypedModel) -> TractResult<()> {
        for node in &mut model.nodes {
            if let Some(matmul) = node.op_as_mut::<OptMatMul>() {
                self.share_packed(matmul);
                continue;
            }
            let Some(konst) = node.op_as::<Const>() else {
                continue;
            };
            let pooled = intern(&mut self.tensors, konst.val());
            if Arc::ptr_eq(&pooled, konst.val()) {
                continue;
            }
            let exotic = konst.exotic_fact().map(dyn_clone::clone_box);
            node.op = Box::new(Const::new_with_opt_exotic_fact(pooled.clone(), exotic)?);
            if let Some(output) = node.outputs.first_mut() {
                output.fact.konst = Some(pooled);
            }
        }
        Ok(())
    }

    /// Points the weights a matmul packed at optimization (its constant operands) at the pooled
    /// copy of the same bytes.
    fn share_packed(&mut self, matmul: &mut OptMatMul) {
        for spec in &mut matmul.micro_ops {
            let ProtoFusedSpec::AddMatMul { a, b, .. } = spec else {
                continue;
            };
            for operand in [a, b] {
                let MatMulOperand::Const(value) = operand else {
                    continue;
                };
                if let Some(eager) = value.downcast_mut::<EagerPackedInput>() {
                    zero_panel_padding(eager);
                }
                let Some(eager) = value.downcast_ref::<EagerPackedInput>() else {
                    continue;
                };
                let pooled = intern(&mut self.packed, &eager.packed);
                if !Arc::ptr_eq(&pooled, &eager.packed) {
                    *value = Box::new(EagerPackedInput {
                        packed: pooled,
                        ..eager.clone()
                    });
                }
            }
        }
    }
}

/// Zeroes the bytes of an f32/f16 packed weight (tract's `PackedFormat`) that hold no value: in
/// each panel of `r` rows, what follows the `k` records (the `end_padding_record` records the
/// kernels may read ahead, and the alignment round-up), and anything past the last panel. tract
/// leaves them uninitialized in release builds (its debug builds zero them), so two packings of
/// the same weights would otherwise differ in those bytes and the pool would keep both: one
/// 0.6 MB copy of MiniLM's pooler per plan. No product reads a value from them. Other packings
/// (`PackedI8K4`, AMX) are written whole by tract.
fn zero_panel_padding(eager: &mut EagerPackedInput) {
    let Some(format) = eager.fact.format.downcast_ref::<PackedFormat>() else {
        return;
    };
    let used = eager.fact.k * format.r * format.dt.size_of();
    let panel = eager.panel_bytes;
    let panels = eager.mn.div_ceil(format.r.max(1));
    if panel == 0 || used > panel {
        return;
    }
    let Some(blob) = Arc::get_mut(&mut eager.packed) else {
        return;
    };
    let bytes = blob.as_bytes_mut();
    let whole = (panels * panel).min(bytes.len());
    for chunk in bytes[..whole].chunks_mut(panel) {
        let start = used.min(chunk.len());
        chunk[start..].fill(0);
    }
    bytes[whole..].fill(0);
}

/// The parsed model as tract's typed model, decluttered, with its two inputs' dimensions left
/// as the symbols `rows` and `sequence`.
struct Source {
    model: TypedModel,
    rows: Symbol,
    sequence: Symbol,
}

impl Source {
    /// Types and declutters `model`, whose two inputs are int64 `[rows, sequence]` token ids
    /// and attention mask.
    fn new(model: InferenceModel) -> TractResult<Self> {
        let rows = model.symbols.sym("sentimq_rows");
        let sequence = model.symbols.sym("sentimq_sequence");
        let fact = InferenceFact::dt_shape(
            i64::datum_type(),
            tvec!(TDim::from(rows.clone()), TDim::from(sequence.clone())),
        );
        let model = model
            .with_input_fact(0, fact.clone())?
            .with_input_fact(1, fact)?
            .into_typed()?
            .into_decluttered()?;
        Ok(Source {
            model,
            rows,
            sequence,
        })
    }

    /// A copy of the model with the dimensions bound to `shape`.
    fn bind(&self, shape: Shape) -> TractResult<TypedModel> {
        let values = HashMap::from([
            (self.rows.clone(), TDim::Val(shape.rows as i64)),
            (self.sequence.clone(), TDim::Val(shape.sequence as i64)),
        ]);
        self.model.set_symbols(&values)
    }
}

impl PlanCache {
    /// Types and declutters `model` once for all the plans to come.
    pub fn new(model: InferenceModel, path: &Path, options: EngineOptions) -> Result<Self, Error> {
        let source = Source::new(model).map_err(|e| Error::BadModel {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        Ok(PlanCache {
            source: Mutex::new(Some(source)),
            path: path.to_path_buf(),
            options,
            plans: Mutex::new(Plans::default()),
            built: Condvar::new(),
            constants: Mutex::new(ConstantPool::default()),
        })
    }

    /// The plan for `shape`, optimizing it on first use. A thread asking for a shape that
    /// another thread is optimizing waits for that plan instead of making a second one.
    pub fn get(&self, shape: Shape) -> Result<Plan, Error> {
        let mut plans = lock(&self.plans);
        loop {
            if let Some(plan) = plans.take_recent(shape) {
                return Ok(plan);
            }
            if !plans.building.contains(&shape) {
                break;
            }
            plans = self
                .built
                .wait(plans)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        plans.building.push(shape);
        drop(plans);
        // Ends the build (and wakes the waiting threads) even if optimizing panics.
        let _building = Building { cache: self, shape };
        // Optimizing takes 50–250 ms: done outside the lock, so other shapes keep running.
        let plan = self.optimize(shape)?;
        let mut plans = lock(&self.plans);
        if plans.cached.len() >= self.options.plan_cache_size.max(1) {
            plans.cached.remove(0);
        }
        plans.cached.push((shape, plan.clone()));
        Ok(plan)
    }

    /// Drops the source model (and the pool, whose contents the plans hold) if the plan of every
    /// shape in `shapes` is cached and the cache holds them all, so none is evicted; afterwards
    /// a shape not cached is an error. Returns whether it did.
    pub fn release_source(&self, shapes: &[Shape]) -> bool {
        let plans = lock(&self.plans);
        let all_cached = shapes
            .iter()
            .all(|shape| plans.cached.iter().any(|(s, _)| s == shape));
        if !all_cached || shapes.len() > self.options.plan_cache_size.max(1) {
            return false;
        }
        let source = lock(&self.source).take();
        let pool = std::mem::take(&mut *lock(&self.constants));
        drop(plans);
        drop((source, pool));
        true
    }

    /// Whether the plan for `shape` is cached now.
    pub fn contains(&self, shape: Shape) -> bool {
        lock(&self.plans).cached.iter().any(|(s, _)| *s == shape)
    }

    fn optimize(&self, shape: Shape) -> Result<Plan, Error> {
        let bad = |e: TractError| Error::BadModel {
            path: self.path.clone(),
            source: e.into(),
        };
        let bound = lock(&self.source)
            .as_ref()
            .ok_or(Error::NoPlan {
                path: self.path.clone(),
                rows: shape.rows,
                sequence: shape.sequence,
            })?
            .bind(shape)
            .map_err(bad)?;
        #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
        let optimized = super::weight_packs::while_building_plan(|| bound.into_optimized());
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let optimized = bound.into_optimized();
        let mut optimized = optimized.map_err(bad)?;
        lock(&self.constants).share(&mut optimized).map_err(bad)?;
        super::packing::swap_packers(&mut optimized).map_err(bad)?;
        optimized.into_runnable().map_err(bad)
    }
}

/// A plan being optimized by this thread; dropping it ends the build for the waiting threads,
/// which then find the plan cached (or, if it failed, build it themselves).
struct Building<'a> {
    cache: &'a PlanCache,
    shape: Shape,
}

impl Drop for Building<'_> {
    fn drop(&mut self) {
        lock(&self.cache.plans)
            .building
            .retain(|s| *s != self.shape);
        self.cache.built.notify_all();
    }
}

impl Plans {
    /// The cached plan for `shape`, marked most recently used.
    fn take_recent(&mut self, shape: Shape) -> Option<Plan> {
        let index = self.cached.iter().position(|(s, _)| *s == shape)?;
        let entry = self.cached.remove(index);
        let plan = entry.1.clone();
        self.cached.push(entry);
        Some(plan)
    }
}

/// A lock that a panicking holder did not spoil: every value behind these locks is whole
/// between statements.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every packed weight of the plans that tract makes for two lengths.
    #[cfg(feature = "workstation")]
    fn packed_weights(cache: &PlanCache, sequence: usize) -> Vec<*const Blob> {
        let plan = cache.get(Shape { rows: 1, sequence }).expect("a plan");
        let mut weights = Vec::new();
        for node in plan.model().nodes() {
            let Some(matmul) = node.op_as::<OptMatMul>() else {
                continue;
            };
            for spec in &matmul.micro_ops {
                if let ProtoFusedSpec::AddMatMul { a, b, .. } = spec {
                    for operand in [a, b] {
                        if let MatMulOperand::Const(value) = operand {
                            if let Some(eager) = value.downcast_ref::<EagerPackedInput>() {
                                weights.push(Arc::as_ptr(&eager.packed));
                            }
                        }
                    }
                }
            }
        }
        weights
    }

    /// A plan cache over the shipped int8 graph.
    #[cfg(feature = "workstation")]
    fn shipped_model_cache() -> PlanCache {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models/imdb-minilm/model.int8.onnx");
        let model = crate::engine::operators::framework()
            .model_for_path(&path)
            .expect("the shipped model parses");
        PlanCache::new(model, &path, EngineOptions::default())
            .expect("the shipped model declutters")
    }

    #[cfg(feature = "workstation")]
    #[test]
    fn threads_asking_for_the_same_new_shape_get_one_plan() {
        let cache = shipped_model_cache();
        let shape = Shape {
            rows: 1,
            sequence: 48,
        };
        let plans: Vec<Plan> = std::thread::scope(|scope| {
            let asking: Vec<_> = (0..3).map(|_| scope.spawn(|| cache.get(shape))).collect();
            asking
                .into_iter()
                .map(|thread| thread.join().expect("no panic").expect("a plan"))
                .collect()
        });
        assert!(
            plans.iter().all(|plan| Arc::ptr_eq(plan, &plans[0])),
            "each thread optimized a plan of its own"
        );
        assert!(cache.contains(shape));
    }

    #[cfg(feature = "workstation")]
    #[test]
    fn the_parsed_model_is_released_only_once_every_shape_has_a_plan_it_keeps() {
        let cache = shipped_model_cache();
        let (short, longer) = (
            Shape {
                rows: 1,
                sequence: 16,
            },
            Shape {
                rows: 1,
                sequence: 32,
            },
        );
        cache.get(short).expect("a plan");
        assert!(
            !cache.release_source(&[short, longer]),
            "32 has no plan yet"
        );
        cache.get(longer).expect("a plan");
        assert!(cache.release_source(&[short, longer]));
        assert!(cache.get(longer).is_ok(), "cached plans are still served");
        let uncached = cache.get(Shape {
            rows: 1,
            sequence: 48,
        });
        assert!(
            matches!(uncached, Err(Error::NoPlan { sequence: 48, .. })),
            "a new shape after the release"
        );

        let path = cache.path.clone();
        let model = crate::engine::operators::framework()
            .model_for_path(&path)
            .expect("parses");
        let one_plan = EngineOptions {
            plan_cache_size: 1,
            ..EngineOptions::default()
        };
        let small = PlanCache::new(model, &path, one_plan).expect("the shipped model declutters");
        small.get(short).expect("a plan");
        small.get(longer).expect("a plan");
        assert!(
            !small.release_source(&[short, longer]),
            "a cache of one plan cannot keep both"
        );
    }

    #[cfg(feature = "workstation")]
    #[test]
    fn plans_of_different_lengths_share_one_copy_of_the_packed_weights() {
        let cache = shipped_model_cache();
        let short = packed_weights(&cache, 16);
        let long = packed_weights(&cache, 160);
        assert!(
            short.len() >= 24,
            "4 packed weights per layer (fused QKV, output, feed-forward in and out), found {}",
            short.len()
        );
        assert_eq!(
            short, long,
            "the 160-token plan uses the 16-token plan's packed weights"
        );
        // From 384 tokens on, the products with 384 outputs have the weights on the tokens'
        // side (tract swaps operands only while tokens are fewer): packed for that side once.
        assert_eq!(
            packed_weights(&cache, 384),
            packed_weights(&cache, 512),
            "the 512-token plan uses the 384-token plan's packed weights"
        );
    }

    #[test]
    fn buckets_step_by_16_to_128_then_double_their_step_with_the_length() {
        assert_eq!(bucket(0, 16), 16);
        assert_eq!(bucket(16, 16), 16);
        assert_eq!(bucket(17, 16), 32);
        assert_eq!(bucket(128, 16), 128);
        assert_eq!(bucket(129, 16), 160);
        assert_eq!(bucket(257, 16), 320);
        assert_eq!(bucket(512, 16), 512);
        let all: Vec<usize> = buckets_up_to(512, 16).collect();
        assert_eq!(
            all,
            [16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512]
        );
        assert_eq!(buckets_up_to(100, 16).last(), Some(112));
        assert_eq!(bucket(5, 1), 5, "a step of 1 is exact up to 8 tokens");
        for tokens in 1..2000 {
            let padded = bucket(tokens, 16);
            assert!(padded >= tokens && (padded - tokens) * 4 <= tokens.max(64));
        }
    }

    #[test]
    fn packed_f32_weights_differing_only_in_padding_are_pooled_as_one() {
        let weights = Tensor::from_shape(
            &[40, 24],
            &(0..960)
                .map(|v| v as f32 * 0.25 - 7.0)
                .collect::<Vec<f32>>(),
        )
        .expect("a tensor");
        let format = PackedFormat::new(f32::datum_type(), 16, 32).with_end_padding_record(2);
        let pack = |garbage: u8| {
            let packed = format.pack_tensor(&weights, 1, 0).expect("packs");
            let mut eager = packed
                .downcast_ref::<EagerPackedInput>()
                .expect("an eager pack")
                .clone();
            let reference = eager.packed.clone();
            let mut blob = (*eager.packed).clone();
            let used = 24 * 16 * 4;
            for panel in blob.as_bytes_mut().chunks_mut(eager.panel_bytes) {
                panel[used..].fill(garbage);
            }
            eager.packed = Arc::new(blob);
            (eager, reference)
        };
        let (mut first, reference) = pack(0xA5);
        let (mut second, _) = pack(0x3C);
        assert_ne!(first.packed, second.packed, "the padding differs");
        assert_eq!(
            first.packed.len(),
            3 * first.panel_bytes,
            "40 rows: 3 panels of 16"
        );
        zero_panel_padding(&mut first);
        zero_panel_padding(&mut second);
        assert_eq!(first.packed, second.packed);
        let used = 24 * 16 * 4;
        for (zeroed, packed) in first
            .packed
            .as_bytes()
            .chunks(first.panel_bytes)
            .zip(reference.as_bytes().chunks(first.panel_bytes))
        {
            assert_eq!(zeroed[..used], packed[..used], "the values are kept");
            assert!(zeroed[used..].iter().all(|&b| b == 0));
        }
        let mut pool = Interned::default();
        let pooled_first = intern(&mut pool, &first.packed);
        let pooled_second = intern(&mut pool, &second.packed);
        assert!(Arc::ptr_eq(&pooled_first, &pooled_second));
    }
}
