//! Faster packers for the int8 activations of the dot-product kernels, swapped into each
//! optimized plan.
//!
//! Before an int8 product, tract packs the activations (rows of `k` int8 values, `k` the
//! contiguous axis) into the layout the kernel reads, one byte at a time with a strided read
//! (one load and store per value, ~10 % of an x86 inference). Two layouts are copies of whole
//! words or rows instead:
//! - `PackedI8K4` (tract's AVX-512 VNNI and ARM SDOT kernels, tract's AMX kernel's activations):
//!   panels of `r` rows, in each panel groups of four consecutive `k` of a row, row after row —
//!   a transposition of 4-byte words;
//! - `PackedAmxA` (the activations of the engine's AMX kernel, [`super::amx`]): panels of `r`
//!   rows, each row's `k` bytes in a row padded to a multiple of 64 — a copy of each row.
//!
//! [`swap_packers`] replaces each `OptMatMulPack` of an optimized plan whose packer for the
//! plan's shape is one of these by a [`PackRows`] writing the same bytes; other packings keep
//! their own packer (the A72 kernel's, `neon_int8`'s blocks of 16 bytes) or tract's (AVX2
//! without VNNI, f32). This reads tract's optimized ops,
//! which are not a stable API: tract is pinned to one version in `Cargo.toml`.

#[cfg(target_arch = "x86_64")]
use super::amx::TokenRows;
use tract_linalg::mmm::{
    EagerPackedInput, MMMInputFormat, MMMInputValue, PackedExoticFact, PackedMatrixStorage,
};
use tract_linalg::pack::PackedI8K4;
#[cfg(target_arch = "x86_64")]
use tract_linalg::x86_64::amx::PackedAmxA;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ndarray::{indices, Dimension};
use tract_onnx::tract_core::ops::matmul::pack::{DynPackedExoticFact, OptMatMulPack};

/// Replaces every `OptMatMulPack` of `model` that packs int8 rows into `PackedI8K4` or
/// `PackedAmxA` by a [`PackRows`] writing the same bytes; returns how many it replaced.
pub(super) fn swap_packers(model: &mut TypedModel) -> TractResult<usize> {
    let mut swapped = 0;
    for index in 0..model.nodes.len() {
        let Some(pack) = PackRows::replacing(model, index)? else {
            continue;
        };
        model.nodes[index].op = Box::new(pack);
        swapped += 1;
    }
    Ok(swapped)
}

/// Packs the int8 rows of its input (the `mn` axis, `k` contiguous) into `format`, one matrix
/// per coordinate of the other axes, as `OptMatMulPack` does.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct PackRows {
    /// The packing of every product this feeds.
    format: RowLayout,
    /// The packers of the `OptMatMulPack` replaced: the output's fact names them.
    packers: Vec<Box<dyn MMMInputFormat>>,
    k_axis: usize,
    mn_axis: usize,
}

/// The layouts [`PackRows`] writes.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
enum RowLayout {
    /// Groups of four `k` of a row, the panel's rows side by side.
    K4(PackedI8K4),
    /// Each row's `k` bytes, padded to a multiple of 64.
    #[cfg(target_arch = "x86_64")]
    AmxRows(PackedAmxA),
    /// The same bytes, as the engine's AMX kernel names them.
    #[cfg(target_arch = "x86_64")]
    TokenRows(TokenRows),
}

impl RowLayout {
    /// The layout of `packer`, if [`PackRows`] writes it.
    fn of(packer: &dyn MMMInputFormat) -> Option<RowLayout> {
        if let Some(k4) = packer.downcast_ref::<PackedI8K4>() {
            return Some(RowLayout::K4(k4.clone()));
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(amx) = packer.downcast_ref::<PackedAmxA>() {
            return Some(RowLayout::AmxRows(amx.clone()));
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(rows) = packer.downcast_ref::<TokenRows>() {
            return Some(RowLayout::TokenRows(rows.clone()));
        }
        None
    }

    fn format(&self) -> Box<dyn MMMInputFormat> {
        match self {
            RowLayout::K4(k4) => Box::new(k4.clone()),
            #[cfg(target_arch = "x86_64")]
            RowLayout::AmxRows(amx) => Box::new(amx.clone()),
            #[cfg(target_arch = "x86_64")]
            RowLayout::TokenRows(rows) => Box::new(rows.clone()),
        }
    }

    fn r(&self) -> usize {
        match self {
            RowLayout::K4(k4) => k4.r,
            #[cfg(target_arch = "x86_64")]
            RowLayout::AmxRows(amx) | RowLayout::TokenRows(TokenRows(amx)) => amx.r,
        }
    }

    fn alignment(&self) -> usize {
        match self {
            RowLayout::K4(k4) => k4.alignment(),
            #[cfg(target_arch = "x86_64")]
            RowLayout::AmxRows(amx) | RowLayout::TokenRows(TokenRows(amx)) => amx.alignment(),
        }
    }

    /// Bytes of one panel of `r` rows of `k` values.
    fn panel_len(&self, k: usize) -> usize {
        match self {
            RowLayout::K4(k4) => k.div_ceil(4) * 4 * k4.r,
            #[cfg(target_arch = "x86_64")]
            RowLayout::AmxRows(amx) | RowLayout::TokenRows(TokenRows(amx)) => {
                k.div_ceil(64) * 64 * amx.r
            }
        }
    }

    /// Writes `row` (row `m` of its matrix) into the zeroed panels `bytes`.
    fn write_row(&self, bytes: &mut [u8], m: usize, row: &[i8], panel_len: usize) {
        let r = self.r();
        match self {
            RowLayout::K4(_) => {
                let group_len = r * 4;
                let start = (m / r) * panel_len + (m % r) * 4;
                let mut words = row.chunks_exact(4);
                // Fixed-size copies: one 4-byte load and store each.
                for (group, word) in (&mut words).enumerate() {
                    let at = start + group * group_len;
                    let word = [word[0] as u8, word[1] as u8, word[2] as u8, word[3] as u8];
                    bytes[at..at + 4].copy_from_slice(&word);
                }
                let tail = words.remainder();
                if !tail.is_empty() {
                    let at = start + (row.len() / 4) * group_len;
                    for (to, &from) in bytes[at..at + tail.len()].iter_mut().zip(tail) {
                        *to = from as u8;
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            RowLayout::AmxRows(_) | RowLayout::TokenRows(_) => {
                let row_len = panel_len / r;
                let at = (m / r) * panel_len + (m % r) * row_len;
                for (to, &from) in bytes[at..at + row.len()].iter_mut().zip(row) {
                    *to = from as u8;
                }
            }
        }
    }
}

impl std::fmt::Display for RowLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.format())
    }
}

impl PackRows {
    /// The replacement for node `index` of `model`, when it is an `OptMatMulPack` of int8 rows
    /// whose packer for the node's (concrete) shape is one of [`RowLayout`]'s.
    fn replacing(model: &TypedModel, index: usize) -> TractResult<Option<Self>> {
        let node = &model.nodes[index];
        let Some(pack) = node.op_as::<OptMatMulPack>() else {
            return Ok(None);
        };
        let ([input], [output]) = (&node.inputs[..], &node.outputs[..]) else {
            return Ok(None);
        };
        let input_fact = model.outlet_fact(*input)?;
        let Some(exotic) = output
            .fact
            .exotic_fact()
            .and_then(|fact| fact.downcast_ref::<DynPackedExoticFact>())
        else {
            return Ok(None);
        };
        let mapping = pack.axes_mapping(&[input_fact], &[&output.fact])?;
        let k_axis = mapping.axis('K')?.inputs[0][0];
        let mn_axis = mapping.axis('M')?.inputs[0][0];
        let (Some(k), Some(mn)) = (
            input_fact.shape[k_axis].as_i64(),
            input_fact.shape[mn_axis].as_i64(),
        ) else {
            return Ok(None);
        };
        // tract's mode picker: the first packer for one row, the last for more.
        let picked = if mn > 1 {
            exotic.packers.last()
        } else {
            exotic.packers.first()
        };
        let Some(format) = picked.and_then(|p| RowLayout::of(&**p)) else {
            return Ok(None);
        };
        let contiguous_k = k_axis + 1 == input_fact.rank();
        if input_fact.datum_type != DatumType::I8 || !contiguous_k || k < 1 || mn < 1 {
            return Ok(None);
        }
        Ok(Some(PackRows {
            format,
            packers: exotic.packers.clone(),
            k_axis,
            mn_axis,
        }))
    }

    /// The output's shape: the input's without its `k` and `mn` axes.
    fn output_shape<D: Clone>(&self, input: &[D]) -> TVec<D> {
        (input.iter().enumerate())
            .filter(|(axis, _)| *axis != self.k_axis && *axis != self.mn_axis)
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// Packs one matrix: `mn` rows of `k` values, row `m` at `rows[m · row_stride..]`.
    fn pack(&self, rows: &[i8], k: usize, mn: usize, row_stride: usize) -> EagerPackedInput {
        let panel_len = self.format.panel_len(k);
        let panels = mn.div_ceil(self.format.r());
        // SAFETY: the fill writes every byte before anything reads them; the padding (the last
        // panel's missing rows, `k` past its last multiple of 4 or 64) stays zero, as tract's
        // does.
        let mut blob =
            unsafe { Blob::new_for_size_and_align(panels * panel_len, self.format.alignment()) };
        let bytes = blob.as_bytes_mut();
        bytes.fill(0);
        for m in 0..mn {
            let row = &rows[m * row_stride..][..k];
            self.format.write_row(bytes, m, row, panel_len);
        }
        EagerPackedInput {
            fact: PackedExoticFact {
                format: self.format.format(),
                mn: mn.to_dim(),
                k,
            },
            packed: Arc::new(blob),
            panel_bytes: panel_len,
            mn,
        }
    }
}

impl Op for PackRows {
    fn name(&self) -> StaticName {
        "PackRows".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{}, k axis {}, mn axis {}",
            self.format, self.k_axis, self.mn_axis
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for PackRows {
    op_out_of_plan!();

    fn eval(&self, _: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape = input.shape();
        let (k, mn) = (shape[self.k_axis], shape[self.mn_axis]);
        let strides = input.strides();
        let row_stride = usize::try_from(strides[self.mn_axis])?;
        let values = input.try_as_plain_ram()?;
        let values = values.as_slice::<i8>()?;
        let mut other_axes: TVec<usize> = shape.into();
        other_axes[self.k_axis] = 1;
        other_axes[self.mn_axis] = 1;
        let packed: TVec<Box<dyn MMMInputValue>> = indices(&*other_axes)
            .into_iter()
            .map(|coords| {
                let offset: isize = (coords.slice().iter().zip(strides))
                    .map(|(&c, &stride)| c as isize * stride)
                    .sum();
                let rows = &values[usize::try_from(offset)?..];
                let matrix: Box<dyn MMMInputValue> = Box::new(self.pack(rows, k, mn, row_stride));
                Ok(matrix)
            })
            .collect::<TractResult<_>>()?;
        let output_shape = self.output_shape(shape);
        let storage = PackedMatrixStorage::new_batched(&output_shape, packed);
        Ok(tvec!(storage.into_tensor(DatumType::I8).into_tvalue()))
    }
}

impl TypedOp for PackRows {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let input = inputs[0];
        ensure!(input.datum_type == DatumType::I8, "PackRows packs int8");
        let packed = DynPackedExoticFact {
            k: input.shape[self.k_axis].clone(),
            mn: input.shape[self.mn_axis].clone(),
            packers: self.packers.clone(),
        };
        let shape = self.output_shape(&input.shape.to_tvec());
        Ok(tvec!(DatumType::I8.fact(shape).with_exotic_fact(packed)))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `mn` rows of `k` values, none of them zero (so missing bytes would show).
    fn rows(mn: usize, k: usize) -> Tensor {
        let values: Vec<i8> = (0..mn * k).map(|i| (i % 251) as i8 | 1).collect();
        Tensor::from_shape(&[mn, k], &values).expect("a tensor")
    }

    fn op(r: usize) -> PackRows {
        PackRows {
            format: RowLayout::K4(PackedI8K4::new(r)),
            packers: vec![Box::new(PackedI8K4::new(r))],
            k_axis: 1,
            mn_axis: 0,
        }
    }

    #[test]
    fn packs_the_same_bytes_as_tracts_packer() {
        let k4 = [8, 16, 32].map(|r| RowLayout::K4(PackedI8K4::new(r)));
        #[cfg(target_arch = "x86_64")]
        let amx = [16, 32].map(|r| RowLayout::AmxRows(PackedAmxA::new(r)));
        #[cfg(target_arch = "x86_64")]
        let amx = amx
            .into_iter()
            .chain([16, 32].map(|r| RowLayout::TokenRows(TokenRows(PackedAmxA::new(r)))));
        #[cfg(not(target_arch = "x86_64"))]
        let amx: [RowLayout; 0] = [];
        for layout in k4.into_iter().chain(amx) {
            for (mn, k) in [(16, 384), (5, 7), (33, 1536), (1, 4), (17, 10), (40, 100)] {
                let input = rows(mn, k);
                let values = input.try_as_plain_ram().expect("values in memory");
                let op = PackRows {
                    format: layout.clone(),
                    ..op(8)
                };
                let ours = op.pack(values.as_slice::<i8>().expect("i8"), k, mn, k);
                let tracts = layout
                    .format()
                    .prepare_one_view(&input.view(), 1, 0)
                    .expect("packs");
                let tracts = tracts
                    .downcast_ref::<EagerPackedInput>()
                    .expect("an eager packed input");
                assert_eq!(
                    ours.packed.as_bytes(),
                    tracts.packed.as_bytes(),
                    "{layout}, {mn}×{k}"
                );
                assert_eq!((ours.panel_bytes, ours.mn), (tracts.panel_bytes, tracts.mn));
                assert_eq!(ours.fact.k, tracts.fact.k);
            }
        }
    }

    #[test]
    fn a_batch_axis_packs_one_matrix_per_coordinate() {
        let (batch, mn, k) = (3, 9, 12);
        let values: Vec<i8> = (0..batch * mn * k).map(|i| (i % 127) as i8).collect();
        let input = Tensor::from_shape(&[batch, mn, k], &values).expect("a tensor");
        let op = PackRows {
            k_axis: 2,
            mn_axis: 1,
            ..op(8)
        };
        let output = op
            .eval(
                &EvalContext::out_of_plan(),
                tvec!(input.clone().into_tvalue()),
            )
            .expect("packs");
        assert_eq!(output[0].shape(), &[batch]);
        let storage = output[0]
            .try_storage_as::<PackedMatrixStorage>()
            .expect("packed matrices");
        for b in 0..batch {
            let matrix = input.slice(0, b, b + 1).expect("a slice");
            let expected = PackedI8K4::new(8)
                .pack_view(&matrix.view(), 2, 1)
                .expect("packs");
            let expected = expected.downcast_ref::<EagerPackedInput>().expect("eager");
            let ours = storage.value_at(&[b]).downcast_ref::<EagerPackedInput>();
            assert_eq!(
                ours.expect("eager").packed.as_bytes(),
                expected.packed.as_bytes(),
                "matrix {b}"
            );
        }
    }
}
