//! The model's parameters: frozen base tensors and trainable `Var`s, built from a
//! [`TensorMap`] (the build step's checkpoint loader, not `VarBuilder::from_pth`) and served to
//! the model's `load` functions through a `VarBuilder`.
//!
//! Which tensors train is decided once, here: the optimizer gets [`Parameters::trainable`] and
//! nothing else, so a frozen weight can never move.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};

use super::RestoreError;
use crate::checkpoint::{Tensor as HostTensor, TensorMap};

/// Frozen and trainable tensors of one model, on one device.
pub struct Parameters {
    frozen: BTreeMap<String, Tensor>,
    trainable: BTreeMap<String, Var>,
    dtype: DType,
    device: Device,
}

impl Parameters {
    /// Uploads `weights` to `device` as `dtype`; the names for which `is_trainable` holds
    /// become `Var`s, the rest plain tensors.
    pub(crate) fn new(
        weights: &TensorMap,
        is_trainable: impl Fn(&str) -> bool,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let mut frozen = BTreeMap::new();
        let mut trainable = BTreeMap::new();
        for (name, host) in weights {
            let tensor = upload(host, dtype, device)?;
            if is_trainable(name) {
                trainable.insert(name.clone(), Var::from_tensor(&tensor)?);
            } else {
                frozen.insert(name.clone(), tensor);
            }
        }
        Ok(Parameters {
            frozen,
            trainable,
            dtype,
            device: device.clone(),
        })
    }

    /// A `VarBuilder` over every tensor, trainable ones as their `Var`s.
    pub(crate) fn var_builder(&self) -> VarBuilder<'static> {
        let tensors = self
            .frozen
            .iter()
            .map(|(name, t)| (name.clone(), t.clone()))
            .chain(
                self.trainable
                    .iter()
                    .map(|(name, v)| (name.clone(), v.as_tensor().clone())),
            )
            .collect();
        VarBuilder::from_backend(
            Box::new(Backend {
                tensors: Arc::new(tensors),
            }),
            self.dtype,
            self.device.clone(),
        )
    }

    /// The trainable variables by canonical name, in name order.
    pub fn trainable(&self) -> &BTreeMap<String, Var> {
        &self.trainable
    }

    /// A frozen tensor by name (tests check that training leaves them alone).
    #[cfg(test)]
    pub(crate) fn frozen(&self, name: &str) -> Option<&Tensor> {
        self.frozen.get(name)
    }

    /// The names of the frozen tensors.
    #[cfg(test)]
    pub(crate) fn frozen_names(&self) -> impl Iterator<Item = &str> {
        self.frozen.keys().map(String::as_str)
    }

    /// The trainable tensors, downloaded as f32.
    pub fn trainable_to_host(&self) -> Result<TensorMap> {
        self.trainable
            .iter()
            .map(|(name, var)| Ok((name.clone(), download(var.as_tensor())?)))
            .collect()
    }

    /// Overwrites trainable tensors with `values` (resuming); every trainable tensor must be
    /// there with its shape.
    pub fn restore_trainable(&self, values: &TensorMap) -> std::result::Result<(), RestoreError> {
        for (name, var) in &self.trainable {
            let host = values
                .get(name)
                .ok_or_else(|| RestoreError::Missing { name: name.clone() })?;
            if host.shape != var.dims() {
                return Err(RestoreError::Shape {
                    name: name.clone(),
                    found: host.shape.clone(),
                    expected: var.dims().to_vec(),
                });
            }
            let upload_error = |source| RestoreError::Upload {
                name: name.clone(),
                source,
            };
            let tensor = upload(host, self.dtype, &self.device).map_err(upload_error)?;
            var.set(&tensor).map_err(upload_error)?;
        }
        Ok(())
    }
}

/// A host tensor on `device` as `dtype`.
pub fn upload(host: &HostTensor, dtype: DType, device: &Device) -> Result<Tensor> {
    Tensor::from_slice(&host.data, host.shape.as_slice(), device)?.to_dtype(dtype)
}

/// A device tensor back on the host, as f32.
pub fn download(tensor: &Tensor) -> Result<HostTensor> {
    Ok(HostTensor {
        shape: tensor.dims().to_vec(),
        data: tensor
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?,
    })
}

/// Serves tensors by exact name; missing names and wrong shapes are errors (never initialised
/// silently: every initialisation is seeded and done before the model is built).
struct Backend {
    tensors: Arc<HashMap<String, Tensor>>,
}

impl SimpleBackend for Backend {
    fn get(&self, shape: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let tensor = self.get_unchecked(name, dtype, dev)?;
        if tensor.shape() != &shape {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("tensor {name}"),
                expected: shape,
                got: tensor.shape().clone(),
            }
            .bt());
        }
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, _: &Device) -> Result<Tensor> {
        let tensor = self
            .tensors
            .get(name)
            .ok_or_else(|| candle_core::Error::CannotFindTensor { path: name.into() }.bt())?;
        if tensor.dtype() == dtype {
            // Same `Tensor` (same id): a trainable one stays a variable.
            Ok(tensor.clone())
        } else {
            tensor.to_dtype(dtype)
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trainable_tensors_are_variables_in_the_builder() {
        let mut weights = TensorMap::new();
        for name in ["frozen.weight", "head.weight"] {
            weights.insert(
                name.into(),
                HostTensor {
                    shape: vec![2],
                    data: vec![1.0, 2.0],
                },
            );
        }
        let params = Parameters::new(
            &weights,
            |n| n.starts_with("head"),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let vb = params.var_builder();
        assert!(vb.get(2, "head.weight").unwrap().is_variable());
        assert!(!vb.get(2, "frozen.weight").unwrap().is_variable());
        assert!(vb.get(3, "head.weight").is_err());
        assert!(vb.get(2, "missing").is_err());
        assert_eq!(params.trainable().len(), 1);
        let mut changed = params.trainable_to_host().unwrap();
        changed.get_mut("head.weight").unwrap().data = vec![5.0, 6.0];
        params.restore_trainable(&changed).unwrap();
        assert_eq!(params.trainable_to_host().unwrap(), changed);
    }
}
