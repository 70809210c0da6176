//! A small ONNX graph writer over the protobuf types that `tract_onnx::pb` exposes.
//!
//! Nodes get unique, readable output names (`{hint}_{n}`); initializers are stored as
//! little-endian `raw_data`. Float constants follow the graph's [`FloatType`], so the same
//! emitting code writes an f32 and an f16 graph.

use half::f16;
use prost::Message;
use tract_onnx::pb::{
    self, attribute_proto::AttributeType, tensor_proto::DataType,
    tensor_shape_proto::dimension::Value as DimValue, type_proto, AttributeProto, GraphProto,
    ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

/// ONNX opset the writer targets (LayerNormalization needs 17).
pub const OPSET: i64 = 17;
/// ONNX IR version matching opset 17.
const IR_VERSION: i64 = 8;

/// Element type of the graph's float tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloatType {
    /// 32-bit IEEE float.
    F32,
    /// 16-bit IEEE float, for CPUs with fast fp16 arithmetic.
    F16,
}

impl FloatType {
    /// The ONNX `DataType` code.
    pub fn onnx_type(self) -> DataType {
        match self {
            FloatType::F32 => DataType::Float,
            FloatType::F16 => DataType::Float16,
        }
    }
}

/// One dimension of a graph input or output.
#[derive(Clone, Debug)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A named symbolic size (`batch`, `sequence`).
    Symbol(&'static str),
}

/// An ONNX attribute value.
pub enum Attr {
    /// `INT`.
    Int(i64),
    /// `INTS`.
    Ints(Vec<i64>),
    /// `FLOAT`.
    Float(f32),
}

/// Accumulates nodes and initializers of one graph.
pub struct GraphBuilder {
    float: FloatType,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    scalars: Vec<(u32, String)>,
    next_id: usize,
}

impl GraphBuilder {
    /// An empty graph whose float initializers are stored as `float`.
    pub fn new(float: FloatType) -> Self {
        GraphBuilder {
            float,
            nodes: Vec::new(),
            initializers: Vec::new(),
            scalars: Vec::new(),
            next_id: 0,
        }
    }

    /// The graph's float type.
    pub fn float_type(&self) -> FloatType {
        self.float
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.next_id += 1;
        format!("{hint}_{}", self.next_id)
    }

    /// Adds a single-output node and returns its output name.
    pub fn op(&mut self, op_type: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        self.op_n(op_type, inputs, attrs, 1).remove(0)
    }

    /// Adds a node with `outputs` outputs and returns their names.
    pub fn op_n(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attrs: Vec<(&str, Attr)>,
        outputs: usize,
    ) -> Vec<String> {
        let names: Vec<String> = (0..outputs).map(|_| self.fresh(op_type)).collect();
        self.push_node(op_type, inputs, &names, attrs);
        names
    }

    /// Adds a node writing to the given output name (used for the graph outputs).
    pub fn op_named(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        attrs: Vec<(&str, Attr)>,
        output: &str,
    ) -> String {
        self.push_node(op_type, inputs, &[output.to_string()], attrs);
        output.to_string()
    }

    fn push_node(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        outputs: &[String],
        attrs: Vec<(&str, Attr)>,
    ) {
        let name = format!("{op_type}_node_{}", self.nodes.len());
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.to_vec(),
            name,
            op_type: op_type.to_string(),
            attribute: attrs
                .into_iter()
                .map(|(name, value)| attribute(name, value))
                .collect(),
            ..Default::default()
        });
    }

    /// Adds a float initializer (converted to the graph's float type).
    pub fn float_tensor(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        let raw = match self.float {
            FloatType::F32 => data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            FloatType::F16 => data
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                .collect(),
        };
        self.raw_tensor(name, dims, self.float.onnx_type(), raw)
    }

    /// Adds an f32 initializer whatever the graph's float type (quantization scales).
    pub fn f32_tensor(&mut self, name: &str, dims: &[usize], data: &[f32]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.raw_tensor(name, dims, DataType::Float, raw)
    }

    /// Adds an int8 initializer.
    pub fn i8_tensor(&mut self, name: &str, dims: &[usize], data: &[i8]) -> String {
        let raw = data.iter().map(|v| *v as u8).collect();
        self.raw_tensor(name, dims, DataType::Int8, raw)
    }

    /// Adds an int64 initializer.
    pub fn i64_tensor(&mut self, name: &str, dims: &[usize], data: &[i64]) -> String {
        let raw = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.raw_tensor(name, dims, DataType::Int64, raw)
    }

    /// A float scalar constant in the graph's float type, shared by every use of the value.
    pub fn scalar(&mut self, value: f32) -> String {
        if let Some((_, name)) = self
            .scalars
            .iter()
            .find(|(bits, _)| *bits == value.to_bits())
        {
            return name.clone();
        }
        let name = format!("const_{}", self.scalars.len());
        self.float_tensor(&name, &[], &[value]);
        self.scalars.push((value.to_bits(), name.clone()));
        name
    }

    fn raw_tensor(
        &mut self,
        name: &str,
        dims: &[usize],
        data_type: DataType,
        raw_data: Vec<u8>,
    ) -> String {
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: data_type as i32,
            name: name.to_string(),
            raw_data,
            ..Default::default()
        });
        name.to_string()
    }

    /// Closes the graph into a model with the given inputs, outputs and metadata.
    pub fn finish(
        self,
        inputs: Vec<ValueInfoProto>,
        outputs: Vec<ValueInfoProto>,
        metadata: &[(&str, String)],
    ) -> ModelProto {
        ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "sentimq".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(GraphProto {
                node: self.nodes,
                name: "sentimq_bert_classifier".into(),
                initializer: self.initializers,
                input: inputs,
                output: outputs,
                ..Default::default()
            }),
            metadata_props: metadata
                .iter()
                .map(|(key, value)| StringStringEntryProto {
                    key: key.to_string(),
                    value: value.clone(),
                })
                .collect(),
            ..Default::default()
        }
    }
}

/// Declares a graph input or output of the given element type and shape.
pub fn value_info(name: &str, elem_type: DataType, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| pb::tensor_shape_proto::Dimension {
            value: Some(match d {
                Dim::Fixed(n) => DimValue::DimValue(*n as i64),
                Dim::Symbol(s) => DimValue::DimParam(s.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: elem_type as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Serialises a model to protobuf bytes.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

fn attribute(name: &str, value: Attr) -> AttributeProto {
    let mut proto = AttributeProto {
        name: name.to_string(),
        ..Default::default()
    };
    match value {
        Attr::Int(i) => {
            proto.r#type = AttributeType::Int as i32;
            proto.i = i;
        }
        Attr::Ints(ints) => {
            proto.r#type = AttributeType::Ints as i32;
            proto.ints = ints;
        }
        Attr::Float(f) => {
            proto.r#type = AttributeType::Float as i32;
            proto.f = f;
        }
    }
    proto
}
