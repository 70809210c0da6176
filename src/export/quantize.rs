//! Symmetric int8 quantization of weight matrices, one scale per row.
//!
//! A row is an output channel of a PyTorch `Linear` weight (`[out, in]`) or one token's vector
//! of an embedding table (`[vocab, hidden]`). Symmetric (zero point 0) int8 keeps the integer
//! matmul free of zero-point corrections, which is the form tract's int8 kernels run fastest.

/// An int8 matrix with one f32 scale per row: `value ≈ q[r][c] · scales[r]`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedRows {
    /// Row-major `[rows, cols]` int8 values in `-127..=127`.
    pub values: Vec<i8>,
    /// One scale per row; 0 rows get scale 1 so dequantization stays finite.
    pub scales: Vec<f32>,
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
}

/// Quantizes a row-major `[rows, cols]` matrix with one symmetric scale per row (`max|w| / 127`).
pub fn quantize_rows(data: &[f32], rows: usize, cols: usize) -> QuantizedRows {
    assert_eq!(
        data.len(),
        rows * cols,
        "quantize_rows: data does not match its shape"
    );
    let mut values = Vec::with_capacity(data.len());
    let mut scales = Vec::with_capacity(rows);
    for row in data.chunks_exact(cols.max(1)).take(rows) {
        let max_abs = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if max_abs > 0.0 { max_abs / 127.0 } else { 1.0 };
        values.extend(
            row.iter()
                .map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8),
        );
        scales.push(scale);
    }
    QuantizedRows {
        values,
        scales,
        rows,
        cols,
    }
}

impl QuantizedRows {
    /// The f32 matrix these values stand for.
    pub fn dequantize(&self) -> Vec<f32> {
        self.values
            .chunks_exact(self.cols.max(1))
            .zip(&self.scales)
            .flat_map(|(row, scale)| row.iter().map(move |&q| f32::from(q) * scale))
            .collect()
    }

    /// The values transposed to `[cols, rows]` (`[in, out]` for a `Linear`, as `MatMul` wants).
    pub fn transposed_values(&self) -> Vec<i8> {
        transpose(&self.values, self.rows, self.cols)
    }
}

/// Transposes a row-major `[rows, cols]` matrix.
pub fn transpose<T: Copy + Default>(data: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = vec![T::default(); data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 4.0
            })
            .collect()
    }

    #[test]
    fn dequantized_weights_are_within_half_a_step() {
        for seed in 0..20 {
            let (rows, cols) = (7, 13);
            let data = pseudo_random(rows * cols, seed);
            let q = quantize_rows(&data, rows, cols);
            let back = q.dequantize();
            for (i, (a, b)) in data.iter().zip(&back).enumerate() {
                let scale = q.scales[i / cols];
                assert!(
                    (a - b).abs() <= scale / 2.0 + 1e-7,
                    "index {i}: {a} vs {b}, scale {scale}"
                );
            }
            // The largest magnitude of each row maps to ±127 exactly.
            for r in 0..rows {
                let row = &q.values[r * cols..(r + 1) * cols];
                assert_eq!(row.iter().map(|v| v.unsigned_abs()).max(), Some(127));
            }
        }
    }

    #[test]
    fn zero_rows_stay_zero() {
        let q = quantize_rows(&[0.0; 6], 2, 3);
        assert_eq!(q.values, vec![0; 6]);
        assert_eq!(q.dequantize(), vec![0.0; 6]);
    }

    #[test]
    fn transpose_round_trips() {
        let data: Vec<i32> = (0..12).collect();
        let t = transpose(&data, 3, 4);
        assert_eq!(t[1], 4);
        assert_eq!(transpose(&t, 4, 3), data);
    }
}
