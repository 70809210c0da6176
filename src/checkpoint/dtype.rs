//! Element types found in weight files, and their conversion to `f32`.
//!
//! Both readers (safetensors and PyTorch) hand raw little-endian bytes here; this is the only
//! place that knows element sizes and widening/narrowing rules. Conversion is exact for f16,
//! bf16 and f32; f64 and 64-bit integers round to the nearest f32.

use half::{bf16, f16};

/// An element type that can be widened or narrowed to `f32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    /// Bytes per element.
    pub(crate) fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// Maps a PyTorch storage class name (`FloatStorage`, ...) to its element type.
    pub(crate) fn from_torch_storage(name: &str) -> Option<DType> {
        Some(match name {
            "DoubleStorage" => DType::F64,
            "FloatStorage" => DType::F32,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        })
    }

    /// Maps a safetensors dtype to its element type; `None` for types with no f32 meaning
    /// (complex, sub-byte and 8-bit floats, unsigned 16–64-bit integers).
    pub(crate) fn from_safetensors(dtype: safetensors::Dtype) -> Option<DType> {
        use safetensors::Dtype as S;
        Some(match dtype {
            S::F64 => DType::F64,
            S::F32 => DType::F32,
            S::F16 => DType::F16,
            S::BF16 => DType::BF16,
            S::I64 => DType::I64,
            S::I32 => DType::I32,
            S::I16 => DType::I16,
            S::I8 => DType::I8,
            S::U8 => DType::U8,
            S::BOOL => DType::Bool,
            _ => return None,
        })
    }

    /// Appends the elements of `bytes` (little-endian, a whole number of elements) to `out`.
    pub(crate) fn extend_f32(self, bytes: &[u8], out: &mut Vec<f32>) {
        debug_assert_eq!(bytes.len() % self.size(), 0, "caller slices whole elements");
        match self {
            DType::F32 => out.extend(le_chunks::<4>(bytes).map(f32::from_le_bytes)),
            DType::F64 => out.extend(le_chunks::<8>(bytes).map(|b| f64::from_le_bytes(b) as f32)),
            DType::F16 => out.extend(le_chunks::<2>(bytes).map(|b| f16::from_le_bytes(b).to_f32())),
            DType::BF16 => {
                out.extend(le_chunks::<2>(bytes).map(|b| bf16::from_le_bytes(b).to_f32()))
            }
            DType::I64 => out.extend(le_chunks::<8>(bytes).map(|b| i64::from_le_bytes(b) as f32)),
            DType::I32 => out.extend(le_chunks::<4>(bytes).map(|b| i32::from_le_bytes(b) as f32)),
            DType::I16 => {
                out.extend(le_chunks::<2>(bytes).map(|b| f32::from(i16::from_le_bytes(b))))
            }
            DType::I8 => out.extend(bytes.iter().map(|&b| f32::from(b as i8))),
            DType::U8 => out.extend(bytes.iter().map(|&b| f32::from(b))),
            DType::Bool => out.extend(bytes.iter().map(|&b| if b == 0 { 0.0 } else { 1.0 })),
        }
    }

    /// Converts a whole buffer of elements.
    pub(crate) fn to_f32(self, bytes: &[u8]) -> Vec<f32> {
        let mut out = Vec::with_capacity(bytes.len() / self.size());
        self.extend_f32(bytes, &mut out);
        out
    }
}

fn le_chunks<const N: usize>(bytes: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    bytes.chunks_exact(N).map(|chunk| {
        let mut array = [0; N];
        array.copy_from_slice(chunk);
        array
    })
}

/// Where a strided view reads in its storage, and how many elements it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StridedView<'a> {
    /// Offset of element `[0, .., 0]`, in elements.
    pub offset: usize,
    /// Size of each dimension.
    pub shape: &'a [usize],
    /// Step of each dimension, in elements.
    pub stride: &'a [usize],
}

/// Why a strided view cannot be read from its storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutOfBounds {
    /// Elements the view reaches (last index + 1), or holds when it holds more than its storage.
    pub needed: u64,
    /// Elements in the storage.
    pub available: u64,
}

impl StridedView<'_> {
    /// Gathers the view's elements in row-major order from `storage` (raw bytes of `dtype`).
    ///
    /// Views that hold more elements than their storage (overlapping, stride 0) are refused,
    /// which also bounds the allocation by the storage size.
    pub(crate) fn gather(&self, dtype: DType, storage: &[u8]) -> Result<Vec<f32>, OutOfBounds> {
        let available = storage.len() / dtype.size();
        let out_of_bounds = |needed: Option<usize>| OutOfBounds {
            needed: needed.map_or(u64::MAX, |n| n as u64),
            available: available as u64,
        };
        let numel = self
            .shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or(out_of_bounds(None))?;
        if numel > available {
            return Err(out_of_bounds(Some(numel)));
        }
        if numel == 0 {
            return Ok(Vec::new());
        }
        let last = self
            .shape
            .iter()
            .zip(self.stride)
            .try_fold(self.offset, |end, (&d, &s)| {
                end.checked_add((d - 1).checked_mul(s)?)
            });
        let end = last.and_then(|l| l.checked_add(1));
        match end {
            Some(end) if end <= available => {}
            _ => return Err(out_of_bounds(end)),
        }

        let size = dtype.size();
        if self.is_contiguous() {
            return Ok(dtype.to_f32(&storage[self.offset * size..(self.offset + numel) * size]));
        }
        let mut out = Vec::with_capacity(numel);
        let mut index = vec![0usize; self.shape.len()];
        let mut position = self.offset;
        for _ in 0..numel {
            dtype.extend_f32(&storage[position * size..(position + 1) * size], &mut out);
            // Odometer over the multi-index, last dimension fastest.
            for dim in (0..index.len()).rev() {
                // Wrapping: a dimension of size 1 may carry any stride, and the final roll-over
                // steps past the end; positions that are read are bounds-checked above.
                index[dim] += 1;
                position = position.wrapping_add(self.stride[dim]);
                if index[dim] < self.shape[dim] {
                    break;
                }
                position = position.wrapping_sub(self.stride[dim].wrapping_mul(self.shape[dim]));
                index[dim] = 0;
            }
        }
        Ok(out)
    }

    /// Row-major contiguous, ignoring the stride of dimensions of size 1.
    fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&d, &s) in self.shape.iter().zip(self.stride).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected *= d;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn converts_half_precision_exactly() {
        let bytes: Vec<u8> = [1.5f32, -2.0, 0.0]
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect();
        assert_eq!(DType::F16.to_f32(&bytes), [1.5, -2.0, 0.0]);
        let bytes: Vec<u8> = [3.0f32, -0.5]
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect();
        assert_eq!(DType::BF16.to_f32(&bytes), [3.0, -0.5]);
        assert_eq!(DType::F64.to_f32(&0.25f64.to_le_bytes()), [0.25]);
        assert_eq!(DType::I64.to_f32(&(-7i64).to_le_bytes()), [-7.0]);
    }

    #[test]
    fn gathers_a_transposed_view() {
        // storage [[0, 1, 2], [3, 4, 5]]; the view is its transpose, shape (3, 2).
        let storage = f32_bytes(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let view = StridedView {
            offset: 0,
            shape: &[3, 2],
            stride: &[1, 3],
        };
        assert_eq!(
            view.gather(DType::F32, &storage),
            Ok(vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0])
        );
    }

    #[test]
    fn contiguous_view_with_offset_and_unit_dims() {
        let storage = f32_bytes(&[9.0, 1.0, 2.0, 3.0, 4.0]);
        let view = StridedView {
            offset: 1,
            shape: &[1, 2, 2],
            stride: &[77, 2, 1],
        };
        assert_eq!(
            view.gather(DType::F32, &storage),
            Ok(vec![1.0, 2.0, 3.0, 4.0])
        );
        let scalar = StridedView {
            offset: 4,
            shape: &[],
            stride: &[],
        };
        assert_eq!(scalar.gather(DType::F32, &storage), Ok(vec![4.0]));
    }

    #[test]
    fn refuses_views_outside_or_larger_than_storage() {
        let storage = f32_bytes(&[0.0; 4]);
        let past_end = StridedView {
            offset: 1,
            shape: &[4],
            stride: &[1],
        };
        assert_eq!(
            past_end.gather(DType::F32, &storage),
            Err(OutOfBounds {
                needed: 5,
                available: 4
            })
        );
        let broadcast = StridedView {
            offset: 0,
            shape: &[1000],
            stride: &[0],
        };
        assert_eq!(
            broadcast.gather(DType::F32, &storage),
            Err(OutOfBounds {
                needed: 1000,
                available: 4
            })
        );
        let overflowing = StridedView {
            offset: 0,
            shape: &[usize::MAX, 2],
            stride: &[1, 1],
        };
        assert!(overflowing.gather(DType::F32, &storage).is_err());
        let huge_stride = StridedView {
            offset: 0,
            shape: &[2],
            stride: &[usize::MAX],
        };
        assert!(huge_stride.gather(DType::F32, &storage).is_err());
    }
}
