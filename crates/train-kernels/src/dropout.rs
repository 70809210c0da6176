//! Counter-based dropout masks: whether element `i` of a draw keyed `key` is kept is a pure
//! function of `(key, i)`, so a mask is reproduced in the backward pass instead of stored,
//! any slice of it can be computed by any thread, and the result never depends on the
//! thread count.
//!
//! Each 64-bit hash (SplitMix64's finaliser of the key and the element's group of four) gives
//! four 16-bit draws; an element is dropped when its draw is below `round(p · 65536)`, so the
//! drop probability is `p` to within 1/131072.

use rayon::prelude::*;

use crate::simd::vectorized;

/// Elements per parallel chunk.
const CHUNK: usize = 1 << 14;
/// Elements whose factors are drawn at a time, before the (vectorised) multiply.
const TILE: usize = 256;

/// What one dropout draw keeps: the key and the threshold for probability `p`.
#[derive(Clone, Copy, Debug)]
pub struct DropoutMask {
    key: u64,
    threshold: u32,
    scale: f32,
}

impl DropoutMask {
    /// The mask of draw `key` for dropout probability `p` in `[0, 1)`.
    pub fn new(key: u64, p: f64) -> Self {
        assert!(
            (0.0..1.0).contains(&p),
            "dropout probability {p} not in [0, 1)"
        );
        DropoutMask {
            key,
            threshold: (p * 65536.0).round() as u32,
            scale: (1.0 / (1.0 - p)) as f32,
        }
    }

    /// The factor kept elements are multiplied by, `1 / (1 - p)`.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// The four 16-bit draws of elements `4·group .. 4·group + 4`.
    #[inline(always)]
    fn draws(&self, group: u64) -> u64 {
        let mut z = self
            .key
            .wrapping_add(group.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `factors[j]` = 0 (dropped) or `scale` (kept) for element `start + j`. Branch-free (a
    /// branch on a 10 % event mispredicts often enough to triple the cost), and the whole
    /// groups of four without bounds checks.
    #[inline(always)]
    fn factors(&self, start: usize, factors: &mut [f32]) {
        let threshold = self.threshold as u64;
        let scale = self.scale;
        let factor = move |draw: u64| (draw >= threshold) as u32 as f32 * scale;
        let len = factors.len();
        let head = ((4 - start % 4) % 4).min(len);
        for (j, f) in factors[..head].iter_mut().enumerate() {
            let index = start + j;
            *f = factor((self.draws((index / 4) as u64) >> (16 * (index % 4))) & 0xFFFF);
        }
        let first_group = ((start + head) / 4) as u64;
        let mut groups = factors[head..].chunks_exact_mut(4);
        for (g, f) in groups.by_ref().enumerate() {
            let bits = self.draws(first_group + g as u64);
            f[0] = factor(bits & 0xFFFF);
            f[1] = factor((bits >> 16) & 0xFFFF);
            f[2] = factor((bits >> 32) & 0xFFFF);
            f[3] = factor(bits >> 48);
        }
        let tail = groups.into_remainder();
        if !tail.is_empty() {
            let bits = self.draws(first_group + ((len - head) / 4) as u64);
            for (lane, f) in tail.iter_mut().enumerate() {
                *f = factor((bits >> (16 * lane)) & 0xFFFF);
            }
        }
    }

    /// `out[j] = src[j] · m[start + j]` where `m` is 0 or `scale`.
    pub(crate) fn apply_at(&self, start: usize, src: &[f32], out: &mut [f32]) {
        assert_eq!(
            src.len(),
            out.len(),
            "dropout: input and output lengths differ"
        );
        vectorized(|| self.apply_at_inner(start, src, out));
    }

    #[inline(always)]
    fn apply_at_inner(&self, start: usize, src: &[f32], out: &mut [f32]) {
        let mut factors = [0f32; TILE];
        for (t, (s, o)) in src.chunks(TILE).zip(out.chunks_mut(TILE)).enumerate() {
            let factors = &mut factors[..s.len()];
            self.factors(start + t * TILE, factors);
            for ((o, s), f) in o.iter_mut().zip(s).zip(factors.iter()) {
                *o = s * f;
            }
        }
    }

    /// `out = src ∘ mask` (the mask's values 0 or `scale`), elements `0..src.len()` of the draw.
    pub fn apply(&self, src: &[f32], out: &mut [f32]) {
        assert_eq!(
            src.len(),
            out.len(),
            "dropout: input and output lengths differ"
        );
        src.par_chunks(CHUNK)
            .zip(out.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(c, (s, o))| self.apply_at(c * CHUNK, s, o));
    }

    /// `data ∘= mask` over elements `start..start + data.len()` of the draw, on this thread.
    pub(crate) fn apply_in_place_at(&self, start: usize, data: &mut [f32]) {
        vectorized(|| {
            let mut factors = [0f32; TILE];
            for (t, d) in data.chunks_mut(TILE).enumerate() {
                let factors = &mut factors[..d.len()];
                self.factors(start + t * TILE, factors);
                for (d, f) in d.iter_mut().zip(factors.iter()) {
                    *d *= f;
                }
            }
        })
    }

    /// The mask itself, `len` values of 0 or `scale` (for devices that multiply it in).
    pub fn values(&self, len: usize) -> Vec<f32> {
        let ones = vec![1f32; len];
        let mut out = vec![0f32; len];
        self.apply(&ones, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_about_p_and_depends_only_on_key_and_index() {
        let mask = DropoutMask::new(42, 0.1);
        let values = mask.values(100_003);
        let dropped = values.iter().filter(|&&v| v == 0.0).count();
        assert!((9_500..10_500).contains(&dropped), "{dropped} dropped");
        assert!(values.iter().all(|&v| v == 0.0 || v == mask.scale()));
        // Any aligned window equals the same elements of the whole draw.
        let mut window = vec![1f32; 1000];
        mask.apply_in_place_at(40_001, &mut window);
        assert_eq!(window, values[40_001..41_001]);
        assert_ne!(DropoutMask::new(43, 0.1).values(1000), values[..1000]);
        assert!(DropoutMask::new(1, 0.0)
            .values(1000)
            .iter()
            .all(|&v| v == 1.0));
    }
}
