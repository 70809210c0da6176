//! Text as the daemon tokenizes it.

use super::files::shipped_tokenizer;
use super::flags;
use crate::tokenizer::{TokenBatch, Truncation};

/// `flags · text` (UTF-8, lossily). Flags pick the window: 0 the shipped model's, 1 16 tokens
/// (head 6), 2 3 tokens (head 0), anything else 64 tokens of head only. Short windows reach the
/// path that tokenizes only the two ends of long texts after a few hundred bytes.
///
/// Invariants: encoding never fails; ids start with `[CLS]`, end with `[SEP]`, fit the window
/// and the vocabulary, are marked truncated exactly when the text had more pieces, and equal
/// those of tokenizing the whole text; a batch of the encoding pads it with the pad id.
pub fn tokenizer_text(data: &[u8]) {
    let (flags, text) = flags(data);
    let text = String::from_utf8_lossy(text);
    let shipped = shipped_tokenizer();
    let truncation = match flags {
        0 => shipped.truncation(),
        1 => Truncation::head_tail(16, 6),
        2 => Truncation::head_tail(3, 0),
        _ => Truncation::head_only(64),
    };
    let tokenizer = shipped
        .clone()
        .with_truncation(truncation)
        .expect("a valid truncation");
    let encoded = tokenizer.encode(&text).expect("any text encodes");
    let ids = &encoded.ids;
    assert!(
        ids.len() >= 2 && ids.len() <= truncation.max_tokens,
        "{} ids",
        ids.len()
    );
    assert_eq!(ids.first(), Some(&tokenizer.cls_id()));
    assert_eq!(ids.last(), Some(&tokenizer.sep_id()));
    let vocab = tokenizer.vocab_size();
    assert!(ids.iter().all(|&id| (id as usize) < vocab));
    let pieces = tokenizer.word_pieces(&text).expect("any text encodes");
    assert_eq!(
        encoded.is_truncated,
        pieces.len() > truncation.max_tokens - 2
    );
    let whole = tokenizer.encode_whole(&text).expect("any text encodes");
    assert_eq!(
        encoded, whole,
        "the ends of a long text tokenize as in the whole text"
    );

    let short = tokenizer.encode("ok").expect("plain text encodes");
    let pad = i64::from(tokenizer.pad_id());
    let batch = TokenBatch::from_encoded(&[encoded.clone(), short.clone()], tokenizer.pad_id());
    assert_eq!(batch.row_tokens(0), ids.len());
    assert_eq!(batch.row_tokens(1), short.ids.len());
    assert!(batch.input_ids[batch.sequence + short.ids.len()..]
        .iter()
        .all(|&id| id == pad));
}
