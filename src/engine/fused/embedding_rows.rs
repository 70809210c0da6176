//! One operator for the int8 word embeddings, reading its table from the model file.
//!
//! The int8 graph looks the words up as `Mul(Cast(Gather(table, ids)), Gather(scales, ids))`:
//! rows of a `[vocabulary, width]` int8 table, each times its row's scale. Left to tract, the
//! table is a tensor like any other, copied out of the file at load and resident for good
//! (11.2 MiB for MiniLM's 30,522 × 384, the largest in the graph), while a text reads a few
//! dozen of its rows. [`EmbeddingRows`] reads them from a read-only map of the model file
//! instead ([`super::super::model_file::ModelFile::map`]): only the pages of the rows texts use
//! are read in, as page cache that the kernel can reclaim, and nothing is copied at load. The
//! values are the chain's: each int8 value as f32 times its row's scale.
//!
//! The chain is fused only when the table's data was left in the file by
//! [`super::super::model_file::read`] (it is large) and nothing else reads the table; the
//! table's initializer is then dropped from the graph and the fused node carries where its
//! bytes are. The map is made after tract has parsed the graph ([`attach_tables`]).

use std::sync::Arc;

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::{DataLocation, DataType};
use tract_onnx::pb::{AttributeProto, NodeProto, TensorProto};
use tract_onnx::tract_hir::internal::*;

use super::super::model_file::ModelFile;
use super::{Graph, Replacement};

/// The operator type the fused nodes get; internal to the engine, never in a file.
pub(super) const OP_TYPE: &str = "sentimq.EmbeddingRows";

/// The fused node's attributes: where the table's bytes are in the model file, and its shape.
const TABLE_OFFSET: &str = "table_offset";
const TABLE_ROWS: &str = "table_rows";
const TABLE_WIDTH: &str = "table_width";

/// Where an int8 `[rows, width]` table is in the model file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct TableAt {
    offset: u64,
    rows: usize,
    width: usize,
}

/// The builder the operator register maps [`OP_TYPE`] to.
pub(super) fn build(
    _: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let attr = |name: &str| -> TractResult<usize> {
        let value = node.get_attr::<i64>(name)?;
        usize::try_from(value).with_context(|| format!("{name} = {value}"))
    };
    let at = TableAt {
        offset: attr(TABLE_OFFSET)? as u64,
        rows: attr(TABLE_ROWS)?,
        width: attr(TABLE_WIDTH)?,
    };
    Ok((expand(EmbeddingRowsExpansion { at, table: None }), vec![]))
}

/// Maps the table of every fused embedding node of `model` from `file`.
pub(in crate::engine) fn attach_tables(
    model: &mut InferenceModel,
    file: &ModelFile,
) -> TractResult<()> {
    for node in model.nodes_mut() {
        let Some(expansion) = node.op_as_mut::<Box<dyn Expansion>>() else {
            continue;
        };
        let Some(rows) = expansion
            .as_any_mut()
            .downcast_mut::<EmbeddingRowsExpansion>()
        else {
            continue;
        };
        let at = rows.at;
        let len = at.rows.checked_mul(at.width).context("table size")?;
        let map = file
            .map(at.offset, len)
            .with_context(|| format!("mapping the embedding table at byte {}", at.offset))?;
        rows.table = Some(Arc::new(Table { map, at }));
    }
    Ok(())
}

/// The word embeddings whose `Mul` is node `mul`: `Mul(Cast(Gather(table, ids)) to f32,
/// Gather(scales, ids))` over axis 0, with an int8 table left in the file that only this chain
/// reads, and `[rows, 1]` f32 scales; every step read only by the next.
pub(super) fn find(graph: &Graph, mul: usize) -> Option<Replacement> {
    let node = graph.node(mul);
    if node.op_type != "Mul" || node.input.len() != 2 {
        return None;
    }
    [(0, 1), (1, 0)].into_iter().find_map(|(rows, scales)| {
        let (cast_index, cast) = graph.producer_index(&node.input[rows])?;
        let to_f32 = cast
            .attribute
            .iter()
            .any(|a| a.name == "to" && a.i == DataType::Float as i64);
        if cast.op_type != "Cast" || !to_f32 || graph.sole_consumer(&cast.output[0]).is_none() {
            return None;
        }
        let (gather_index, gather) = row_gather(graph, &cast.input[0])?;
        let (scale_index, scale_gather) = row_gather(graph, &node.input[scales])?;
        let ids = &gather.input[1];
        if scale_gather.input[1] != *ids || graph.sole_consumer(&gather.input[0]).is_none() {
            return None;
        }
        let at = table_in_file(graph.initializers.get(gather.input[0].as_str())?)?;
        let scale = graph.initializers.get(scale_gather.input[0].as_str())?;
        let one_scale_per_row = scale.dims == [at.rows as i64, 1] || scale.dims == [at.rows as i64];
        if scale.data_type != DataType::Float as i32 || !one_scale_per_row {
            return None;
        }
        let int = |name: &str, value: u64| AttributeProto {
            name: name.into(),
            r#type: AttributeType::Int as i32,
            i: value as i64,
            ..AttributeProto::default()
        };
        let mut nodes = vec![gather_index, cast_index, scale_index, mul];
        nodes.sort_unstable();
        (nodes.last() == Some(&mul)).then(|| Replacement {
            nodes,
            node: NodeProto {
                name: format!("{}.embedding_rows", node.name),
                op_type: OP_TYPE.to_string(),
                input: vec![ids.clone(), scale_gather.input[0].clone()],
                output: node.output.clone(),
                attribute: vec![
                    int(TABLE_OFFSET, at.offset),
                    int(TABLE_ROWS, at.rows as u64),
                    int(TABLE_WIDTH, at.width as u64),
                ],
                ..NodeProto::default()
            },
        })
    })
}

/// The `Gather` over axis 0 computing `value`, read by nothing else, and its index.
fn row_gather<'a>(graph: &Graph<'a>, value: &str) -> Option<(usize, &'a NodeProto)> {
    let (index, gather) = graph.producer_index(value)?;
    let axis_0 = gather
        .attribute
        .iter()
        .find(|a| a.name == "axis")
        .is_none_or(|a| a.i == 0);
    (gather.op_type == "Gather"
        && gather.input.len() == 2
        && axis_0
        && graph.sole_consumer(value).is_some())
    .then_some((index, gather))
}

/// Where an int8 `[rows, width]` initializer's data is in the model file, when
/// [`super::super::model_file::read`] left it there.
fn table_in_file(tensor: &TensorProto) -> Option<TableAt> {
    let entry = |key: &str| -> Option<u64> {
        let entry = tensor.external_data.iter().find(|e| e.key == key)?;
        entry.value.parse().ok()
    };
    let in_file = tensor.data_location == Some(DataLocation::External as i32);
    let [rows, width] = tensor.dims[..] else {
        return None;
    };
    let (rows, width) = (usize::try_from(rows).ok()?, usize::try_from(width).ok()?);
    let (offset, length) = (entry("offset")?, entry("length")?);
    (in_file
        && tensor.data_type == DataType::Int8 as i32
        && tensor.raw_data.is_empty()
        && rows.checked_mul(width)? as u64 == length)
        .then_some(TableAt {
            offset,
            rows,
            width,
        })
}

/// The fused node while tract infers types: token ids (any integer type) and the `[rows, 1]`
/// scales → f32 rows of `width`, one per id.
#[derive(Debug, Clone)]
struct EmbeddingRowsExpansion {
    at: TableAt,
    /// The mapped table, once [`attach_tables`] has made it.
    table: Option<Arc<Table>>,
}

impl std::hash::Hash for EmbeddingRowsExpansion {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.at.hash(state);
    }
}

impl Expansion for EmbeddingRowsExpansion {
    fn name(&self) -> StaticName {
        OP_TYPE.into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, DatumType::F32)?;
        s.equals(&inputs[1].datum_type, DatumType::F32)?;
        let width = self.at.width;
        s.given(&inputs[0].shape, move |s, ids| {
            let mut shape = ids;
            shape.push(width.to_dim());
            s.equals(&outputs[0].shape, shape)
        })
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let table = self
            .table
            .clone()
            .context("the embedding table was not mapped from the model file")?;
        model.wire_node(prefix, EmbeddingRows { table }, inputs)
    }
}

/// An int8 table mapped from the model file.
struct Table {
    map: memmap2::Mmap,
    at: TableAt,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} (mapped)", self.at)
    }
}

impl Table {
    /// Row `row` (`< rows`).
    fn row(&self, row: usize) -> &[u8] {
        &self.map[row * self.at.width..(row + 1) * self.at.width]
    }
}

/// `rows[id] · scales[id]` for every id, ids counted from the end when negative (ONNX
/// `Gather`); an id outside the table is an error.
#[derive(Debug, Clone)]
pub(super) struct EmbeddingRows {
    table: Arc<Table>,
}

/// Operators are compared and hashed (tract merges equal nodes): by the table they read.
impl PartialEq for EmbeddingRows {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.table, &other.table)
    }
}

impl Eq for EmbeddingRows {}

impl std::hash::Hash for EmbeddingRows {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.table.at.hash(state);
    }
}

impl Op for EmbeddingRows {
    fn name(&self) -> StaticName {
        "EmbeddingRows".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let at = self.table.at;
        Ok(vec![format!(
            "{} × {} int8, mapped from byte {} of the model file",
            at.rows, at.width, at.offset
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for EmbeddingRows {
    op_out_of_plan!();

    fn eval(&self, _: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let [ids, scales] = &inputs[..] else {
            bail!("EmbeddingRows reads token ids and the rows' scales");
        };
        let TableAt { rows, width, .. } = self.table.at;
        let ids = ids.cast_to::<i64>()?;
        let ids = ids.try_as_plain_ram()?;
        let ids = ids.as_slice::<i64>()?;
        let scales = scales.try_as_plain_ram()?;
        let scales = scales.as_slice::<f32>()?;
        ensure!(
            scales.len() == rows,
            "EmbeddingRows needs {rows} scales, not {}",
            scales.len()
        );
        let mut shape: TVec<usize> = inputs[0].shape().into();
        shape.push(width);
        // SAFETY: every row is written below before the tensor is returned.
        let mut out = unsafe { Tensor::uninitialized::<f32>(&shape)? };
        {
            let mut view = out.try_as_plain_ram_mut()?;
            let out_rows = view.as_slice_mut::<f32>()?.chunks_exact_mut(width.max(1));
            for (out, &id) in out_rows.zip(ids) {
                let row = if id < 0 { id + rows as i64 } else { id };
                ensure!(
                    (0..rows as i64).contains(&row),
                    "token id {id} is outside the vocabulary of {rows}"
                );
                let row = row as usize;
                let scale = scales[row];
                for (y, &v) in out.iter_mut().zip(self.table.row(row)) {
                    *y = f32::from(v as i8) * scale;
                }
            }
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for EmbeddingRows {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            inputs.len() == 2,
            "EmbeddingRows reads token ids and the rows' scales"
        );
        ensure!(
            inputs[1].datum_type == DatumType::F32,
            "EmbeddingRows' scales are f32"
        );
        let mut shape = inputs[0].shape.to_tvec();
        shape.push(self.table.at.width.to_dim());
        Ok(tvec!(DatumType::F32.fact(shape)))
    }

    as_op!();
}

#[cfg(all(test, feature = "workstation"))]
mod tests {
    use super::*;
    use crate::engine::model_file;
    use crate::engine::operators::framework;
    use tract_onnx::pb::ModelProto;

    fn shipped() -> (ModelProto, Arc<ModelFile>) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models/imdb-minilm/model.int8.onnx");
        let (proto, file) = model_file::read(&path).expect("the shipped graph reads");
        (proto, Arc::new(file))
    }

    /// Every output of `proto`'s plan for one row of `ids`, its tables mapped from `file`.
    fn run(proto: &ModelProto, file: &Arc<ModelFile>, ids: &[i64]) -> TractResult<Vec<Vec<f32>>> {
        let mut onnx = framework();
        onnx.provider = file.clone();
        let directory = file.directory().to_str().expect("a UTF-8 path");
        let mut model = onnx.parse(proto, Some(directory))?.model;
        attach_tables(&mut model, file)?;
        let fact = InferenceFact::dt_shape(DatumType::I64, tvec!(1, ids.len()));
        let plan = model
            .with_input_fact(0, fact.clone())?
            .with_input_fact(1, fact)?
            .into_optimized()?
            .into_runnable()?;
        let ids = Tensor::from_shape(&[1, ids.len()], ids)?;
        let mask = Tensor::from_shape(&[1, ids.len()], &vec![1i64; ids.len()])?;
        Ok(plan
            .run(tvec!(ids.into(), mask.into()))?
            .iter()
            .map(|t| {
                let values = t.try_as_plain_ram().expect("values in memory");
                values.as_slice::<f32>().expect("f32 outputs").to_vec()
            })
            .collect())
    }

    #[test]
    fn rows_read_from_the_file_are_the_chains_bit_for_bit() {
        let (plain, file) = shipped();
        let mut fused = plain.clone();
        let graph = fused.graph.as_mut().expect("a graph");
        assert_eq!(super::super::replace(graph, find), 1, "the word embeddings");
        assert!(graph.node.iter().any(|n| n.op_type == OP_TYPE));
        // "[CLS] a truly wonderful , moving film [SEP]", a row of 41 ids across the vocabulary
        // (its last row among them, also counted from the end), and one of the first rows.
        let short = [101, 1037, 5621, 6919, 1010, 3048, 2143, 102];
        let long: Vec<i64> = (0..38)
            .map(|i| 101 + 800 * i)
            .chain([30521, -1, 102])
            .collect();
        for ids in [&short[..], &long[..], &[0, 1, 2][..]] {
            let fused = run(&fused, &file, ids).expect("the fused graph runs");
            let plain = run(&plain, &file, ids).expect("the plain graph runs");
            assert_eq!(fused, plain, "ids {ids:?}");
        }
    }

    #[test]
    fn an_id_outside_the_vocabulary_is_an_error() {
        let (mut proto, file) = shipped();
        let graph = proto.graph.as_mut().expect("a graph");
        super::super::fuse(graph);
        assert!(
            graph.initializer.iter().all(|t| t.dims != [30522, 384]),
            "the table's initializer is dropped"
        );
        let error = run(&proto, &file, &[101, 30522, 102]).expect_err("id 30522 of 30522");
        assert!(
            format!("{error:?}").contains("token id 30522 is outside the vocabulary of 30522"),
            "{error:?}"
        );
    }
}
