//! Hand-assembled pickles: the opcodes `torch.save` writes, and errors with their offsets.

use super::*;

#[test]
fn decodes_a_state_dict_shaped_pickle() {
    // pickle.dumps(OrderedDict(a=(1, -2, 2**40), b=[1.5, "x"]), protocol=2), hand-assembled
    // with a memoised tuple referenced twice.
    let mut bytes = vec![0x80, 2];
    bytes.extend(b"ccollections\nOrderedDict\nq\x00)R");
    bytes.extend(
        b"(X\x01\x00\x00\x00aK\x01J\xfe\xff\xff\xff\x8a\x06\x00\x00\x00\x00\x00\x01\x87q\x01",
    );
    bytes.extend(b"X\x01\x00\x00\x00b]q\x02(G\x3f\xf8\x00\x00\x00\x00\x00\x00\x8c\x01xe");
    bytes.extend(b"X\x01\x00\x00\x00ch\x01u.");
    let pickle = load(&bytes, 0).unwrap();
    let Object::Dict(pairs) = pickle.get(pickle.root()) else {
        panic!("not a dict")
    };
    assert_eq!(pairs.len(), 3);
    let Object::Tuple(items) = pickle.get(pairs[0].1) else {
        panic!("not a tuple")
    };
    let ints: Vec<_> = items.iter().map(|&id| pickle.get(id).clone()).collect();
    assert_eq!(
        ints,
        [Object::Int(1), Object::Int(-2), Object::Int(1 << 40)]
    );
    assert_eq!(pairs[2].1, pairs[0].1, "BINGET shares the memoised object");
    let Object::List(items) = pickle.get(pairs[1].1) else {
        panic!("not a list")
    };
    assert_eq!(pickle.get(items[0]), &Object::Float(1.5));
    assert_eq!(pickle.get(items[1]), &Object::Str("x".into()));
    assert_eq!(pickle.end(), bytes.len());
}

#[test]
fn wide_integers_keep_their_bytes() {
    // torch's legacy magic number, LONG1 with 10 bytes.
    let bytes = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.";
    let pickle = load(bytes, 0).unwrap();
    assert_eq!(
        pickle.get(pickle.root()),
        &Object::BigInt(vec![
            0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19
        ])
    );
    let negative = load(b"\x8a\x01\xff.", 0).unwrap();
    assert_eq!(negative.get(negative.root()), &Object::Int(-1));
}

#[test]
fn errors_name_the_offset() {
    let cases: &[(&[u8], usize, &str)] = &[
        (b"\x80\x02X\xff\x00\x00\x00ab", 2, "unexpected end"),
        (b"\x80\x02}(K\x01u.", 6, "cannot form key/value pairs"),
        (b"\x80\x02h\x07.", 2, "memo has no entry 7"),
        (
            b"\x80\x02K\x00K\x01K\x02s.",
            8,
            "SETITEM on int 0, expected a dict",
        ),
        (b"\x80\x02(t0.", 5, "stack underflow"),
        (b"\x80\x02S'x'\n.", 2, "unsupported opcode 0x53"),
        (b"\x80\x02cfoo", 2, "unterminated"),
        (b"\x80\x02", 2, "unexpected end"),
        (b"\x80\x02K\x01)(R.", 6, "popped past a MARK"),
    ];
    for &(bytes, offset, reason) in cases {
        let error = load(bytes, 0).unwrap_err();
        assert_eq!(error.offset, offset, "{bytes:?}: {error:?}");
        assert!(error.reason.contains(reason), "{bytes:?}: {error:?}");
    }
}
