use std::path::PathBuf;

use super::*;
use crate::test_inputs::shared;

fn minilm_dir() -> PathBuf {
    shared("models/all-MiniLM-L6-v2")
}

#[derive(serde::Deserialize)]
struct GoldenCase {
    text: String,
    max_length: usize,
    input_ids: Vec<u32>,
}

#[derive(serde::Deserialize)]
struct Golden {
    cases: Vec<GoldenCase>,
}

fn golden() -> Golden {
    let path = shared("fixtures/golden-tokenizer.json");
    let text = std::fs::read_to_string(path).expect("golden file readable");
    serde_json::from_str(&text).expect("golden file parses")
}

fn check_golden(tokenizer: &TextTokenizer, golden: &Golden) {
    for case in &golden.cases {
        // The golden ids come from Hugging Face's default (head) truncation.
        let tokenizer = tokenizer
            .clone()
            .with_truncation(Truncation::head_only(case.max_length))
            .unwrap();
        let encoded = tokenizer.encode(&case.text).unwrap();
        assert_eq!(encoded.ids, case.input_ids, "text {:?}", case.text);
        assert_eq!(
            encoded.is_truncated,
            case.input_ids.len() == case.max_length && case.text.len() > 1000
        );
    }
}

#[test]
fn tokenizer_json_matches_golden_ids() {
    let (dir, golden) = (minilm_dir(), golden());
    let tokenizer =
        TextTokenizer::from_tokenizer_json(&dir.join("tokenizer.json"), Truncation::head_only(128))
            .unwrap();
    check_golden(&tokenizer, &golden);
}

#[test]
fn vocab_txt_matches_golden_ids() {
    let (dir, golden) = (shared("fixtures/tinybert-format"), golden());
    // TinyBERT ships vocab.txt only: from_dir must build the tokenizer from it.
    assert!(!dir.join("tokenizer.json").exists());
    let tokenizer = TextTokenizer::from_dir(&dir, Truncation::head_only(128)).unwrap();
    check_golden(&tokenizer, &golden);
}

#[test]
fn saved_vocab_tokenizer_round_trips() {
    let (dir, golden) = (shared("fixtures/tinybert-format"), golden());
    let built = TextTokenizer::from_dir(&dir, Truncation::head_only(128)).unwrap();
    let out = tempfile::tempdir().unwrap();
    built.save(&out.path().join("tokenizer.json")).unwrap();
    let reloaded = TextTokenizer::from_dir(out.path(), Truncation::head_only(128)).unwrap();
    check_golden(&reloaded, &golden);
}

#[test]
fn head_tail_keeps_first_and_last_pieces() {
    let dir = minilm_dir();
    let tokenizer = TextTokenizer::from_dir(&dir, Truncation::head_tail(16, 6)).unwrap();
    let text: String = (0..200).map(|i| format!("w{i} ")).collect();
    let pieces = tokenizer.word_pieces(&text).unwrap();
    let encoded = tokenizer.encode(&text).unwrap();
    assert!(encoded.is_truncated);
    assert_eq!(encoded.ids.len(), 16);
    assert_eq!(encoded.ids[0], tokenizer.cls_id());
    assert_eq!(encoded.ids[15], tokenizer.sep_id());
    assert_eq!(&encoded.ids[1..7], &pieces[..6]);
    assert_eq!(&encoded.ids[7..15], &pieces[pieces.len() - 8..]);
}

#[test]
fn short_text_is_not_truncated() {
    let dir = minilm_dir();
    let tokenizer = TextTokenizer::from_dir(&dir, Truncation::head_tail(16, 6)).unwrap();
    let encoded = tokenizer.encode("a fine film").unwrap();
    assert!(!encoded.is_truncated);
    assert_eq!(encoded.ids.len(), 5);
}

#[test]
fn window_shortcut_equals_full_tokenization() {
    let dir = minilm_dir();
    let tokenizer = TextTokenizer::from_dir(&dir, Truncation::head_tail(64, 20)).unwrap();
    let sentence = "The acting was superb, the plot—unbelievable! Café crème. ";
    let text = sentence.repeat(400);
    let pieces = tokenizer.word_pieces(&text).unwrap();
    let mut expected = vec![tokenizer.cls_id()];
    expected.extend_from_slice(&pieces[..20]);
    expected.extend_from_slice(&pieces[pieces.len() - 42..]);
    expected.push(tokenizer.sep_id());
    let encoded = tokenizer.encode(&text).unwrap();
    assert_eq!(encoded.ids, expected);
    assert!(encoded.is_truncated);
}

#[test]
fn megabyte_text_and_unbroken_text_are_handled() {
    let dir = minilm_dir();
    let tokenizer = TextTokenizer::from_dir(&dir, Truncation::head_tail(256, 128)).unwrap();
    let long = "great movie ".repeat(90_000);
    let encoded = tokenizer.encode(&long).unwrap();
    assert_eq!(encoded.ids.len(), 256);
    assert!(encoded.is_truncated);
    // No whitespace at all: the shortcut cannot cut, the full path still answers.
    let unbroken = "x".repeat(1 << 20);
    let encoded = tokenizer.encode(&unbroken).unwrap();
    assert!(encoded.ids.len() <= 256);
}

#[test]
fn texts_without_spaces_are_cut_at_punctuation_and_ideographs() {
    let dir = minilm_dir();
    let tokenizer = TextTokenizer::from_dir(&dir, Truncation::head_tail(64, 20)).unwrap();
    let window = 64 * WINDOW_BYTES_PER_TOKEN;
    for text in [
        "a,".repeat(20_000),
        "好电影真的".repeat(2_000),
        "[SEP][MASK]x".repeat(1_000),
    ] {
        // The first windows already hold enough pieces: the whole text is never tokenized.
        let ends = tokenizer.encode_ends(&text, window).unwrap();
        assert!(ends.is_some(), "{:?}… is cut near its ends", &text[..40]);
        assert_eq!(
            tokenizer.encode(&text).unwrap(),
            tokenizer.encode_whole(&text).unwrap()
        );
    }
    // A first word longer than the window (one [UNK]) fills too little of it: the window is
    // widened, not given up for the whole text.
    let text = format!("{}{}", "😀".repeat(400), "no,way!".repeat(2_000));
    assert!(tokenizer.encode_ends(&text, window).unwrap().is_none());
    assert!(tokenizer.encode_ends(&text, 4 * window).unwrap().is_some());
    assert_eq!(
        tokenizer.encode(&text).unwrap(),
        tokenizer.encode_whole(&text).unwrap()
    );
}

#[test]
fn cuts_fall_next_to_split_characters_only() {
    assert!(is_cut("ab cd", 2) && is_cut("ab cd", 3));
    assert!(is_cut("ab,cd", 2) && is_cut("ab,cd", 3));
    assert!(is_cut("电影", 3));
    assert!(!is_cut("abcd", 2), "inside a word");
    assert!(!is_cut("é,", 1), "inside a character");
    assert!(
        !is_cut("x[SEP]", 2) && !is_cut("x[SEP]", 5),
        "inside a special token"
    );
    assert!(is_cut("x[SEP]y", 1) && is_cut("x[SEP]y", 6));
    assert_eq!(split_before("abc def", 5), Some(4));
    assert_eq!(split_after("abc def", 1), Some(3));
    assert_eq!(split_before("abcdef", 5), None);
}

#[test]
fn empty_text_is_cls_sep() {
    let dir = minilm_dir();
    let tokenizer = TextTokenizer::from_dir(&dir, Truncation::head_tail(256, 128)).unwrap();
    let encoded = tokenizer.encode("").unwrap();
    assert_eq!(encoded.ids, vec![tokenizer.cls_id(), tokenizer.sep_id()]);
}

#[test]
fn bad_truncation_and_missing_files_are_errors() {
    assert!(matches!(
        Truncation::head_tail(2, 0).validate(),
        Err(Error::BadTruncation { .. })
    ));
    assert!(matches!(
        Truncation::head_tail(10, 9).validate(),
        Err(Error::BadTruncation { .. })
    ));
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        TextTokenizer::from_dir(empty.path(), Truncation::head_only(8)),
        Err(Error::NotFound { .. })
    ));
    std::fs::write(empty.path().join("tokenizer.json"), b"{not json").unwrap();
    let err = TextTokenizer::from_dir(empty.path(), Truncation::head_only(8))
        .err()
        .unwrap();
    assert!(matches!(err, Error::Unreadable { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.json"));
}

#[test]
fn vocab_without_special_tokens_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vocab.txt"), "hello\nworld\n[UNK]\n").unwrap();
    let err = TextTokenizer::from_dir(dir.path(), Truncation::head_only(8))
        .err()
        .unwrap();
    assert!(
        matches!(err, Error::MissingSpecialToken { token: "[CLS]", .. }),
        "{err}"
    );
}

#[test]
fn batch_pads_to_longest_item_only() {
    let items = [
        Encoded {
            ids: vec![101, 7, 102],
            is_truncated: false,
        },
        Encoded {
            ids: vec![101, 7, 8, 9, 102],
            is_truncated: false,
        },
    ];
    let batch = TokenBatch::from_encoded(&items, 0);
    assert_eq!((batch.batch, batch.sequence), (2, 5));
    assert_eq!(batch.input_ids, vec![101, 7, 102, 0, 0, 101, 7, 8, 9, 102]);
    assert_eq!(batch.attention_mask, vec![1, 1, 1, 0, 0, 1, 1, 1, 1, 1]);
    assert_eq!(batch.row_tokens(0), 3);
}
