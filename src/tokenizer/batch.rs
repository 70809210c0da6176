//! Padding encoded texts into one rectangular batch.

use super::Encoded;

/// Token ids and attention mask of several texts, padded to the longest one.
///
/// Row-major `(batch, sequence)` i64 tensors as the ONNX graph takes them; mask 1 = token,
/// 0 = padding. Padding goes only up to the longest text of the batch, never to the model's
/// maximum length: attention cost grows with the square of the sequence.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenBatch {
    /// `(batch, sequence)` token ids, padded with the tokenizer's pad id.
    pub input_ids: Vec<i64>,
    /// `(batch, sequence)` attention mask.
    pub attention_mask: Vec<i64>,
    /// Number of rows.
    pub batch: usize,
    /// Length of each row (the longest text's token count).
    pub sequence: usize,
    /// The tokenizer's pad id, which fills `input_ids` past each text (and which the engine
    /// pads with when it rounds a row up to a length bucket).
    pub pad_id: i64,
}

impl TokenBatch {
    /// Pads `items` into one batch, reusing this batch's buffers.
    pub fn fill<'a>(&mut self, items: impl IntoIterator<Item = &'a Encoded> + Clone, pad_id: u32) {
        self.sequence = items
            .clone()
            .into_iter()
            .map(|e| e.ids.len())
            .max()
            .unwrap_or(0);
        self.batch = 0;
        self.pad_id = i64::from(pad_id);
        self.input_ids.clear();
        self.attention_mask.clear();
        for item in items {
            let pad = self.sequence - item.ids.len();
            self.input_ids
                .extend(item.ids.iter().map(|&id| i64::from(id)));
            self.input_ids.extend(std::iter::repeat_n(self.pad_id, pad));
            self.attention_mask
                .extend(std::iter::repeat_n(1, item.ids.len()));
            self.attention_mask.extend(std::iter::repeat_n(0, pad));
            self.batch += 1;
        }
    }

    /// A new batch padded from `items`.
    pub fn from_encoded(items: &[Encoded], pad_id: u32) -> Self {
        let mut batch = TokenBatch::default();
        batch.fill(items.iter(), pad_id);
        batch
    }

    /// Whether the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.batch == 0
    }

    /// Number of real (unpadded) tokens in row `row`.
    pub fn row_tokens(&self, row: usize) -> usize {
        self.attention_mask[row * self.sequence..(row + 1) * self.sequence]
            .iter()
            .filter(|&&m| m != 0)
            .count()
    }
}
