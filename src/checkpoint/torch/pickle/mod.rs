//! A small, non-executing pickle virtual machine for the subset `torch.save` writes.
//!
//! It decodes one pickle into an object graph held in an arena: every object is an [`Object`]
//! addressed by an [`ObjId`], containers hold ids, and the memo hands out ids, so shared and
//! mutated objects behave as in Python without cloning. Nothing is imported or called: globals
//! stay names, and `REDUCE`/`NEWOBJ` build [`Object::Reduce`] nodes that the caller interprets
//! (the one exception is `collections.OrderedDict()`, which becomes a dict so that `SETITEMS`
//! can fill it). Persistent ids become [`Object::PersistentId`] for the caller to resolve.
//!
//! Every read is bounds-checked and every error carries the byte offset of the opcode; memory
//! is bounded by the input (each opcode creates at most one object). Protocols 0–5 framing is
//! accepted, but only the opcodes listed in `opcodes.rs` are implemented.

mod opcodes;

use std::collections::HashMap;

use self::opcodes as op;

/// Index of an object in a [`Pickle`]'s arena.
pub(crate) type ObjId = usize;

/// One decoded Python object.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Object {
    None,
    Bool(bool),
    Int(i64),
    /// An integer too wide for `i64`: little-endian two's complement bytes.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<ObjId>),
    List(Vec<ObjId>),
    Dict(Vec<(ObjId, ObjId)>),
    /// A `set` or `frozenset`.
    Set(Vec<ObjId>),
    /// A class or function named by `GLOBAL`/`STACK_GLOBAL`.
    Global {
        module: String,
        name: String,
    },
    /// `callable(*args)` not evaluated, plus the state a later `BUILD` gave it.
    Reduce {
        callable: ObjId,
        args: ObjId,
        state: Option<ObjId>,
    },
    /// The result of `persistent_load(pid)`.
    PersistentId(ObjId),
}

impl Object {
    /// A short description for error messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Object::None => "None".into(),
            Object::Bool(b) => format!("bool {b}"),
            Object::Int(i) => format!("int {i}"),
            Object::BigInt(bytes) => format!("a {}-byte int", bytes.len()),
            Object::Float(f) => format!("float {f}"),
            Object::Str(s) if s.len() <= 40 => format!("str {s:?}"),
            Object::Str(s) => format!("a {}-byte str", s.len()),
            Object::Bytes(b) => format!("{} bytes", b.len()),
            Object::Tuple(items) => format!("a {}-tuple", items.len()),
            Object::List(items) => format!("a list of {}", items.len()),
            Object::Dict(items) => format!("a dict of {}", items.len()),
            Object::Set(items) => format!("a set of {}", items.len()),
            Object::Global { module, name } => format!("{module}.{name}"),
            Object::Reduce { .. } => "a reduced object".into(),
            Object::PersistentId(_) => "a persistent id".into(),
        }
    }
}

/// A decoded pickle: its object arena and the object `STOP` returned.
#[derive(Debug)]
pub(crate) struct Pickle {
    objects: Vec<Object>,
    root: ObjId,
    end: usize,
}

impl Pickle {
    /// The object `STOP` returned.
    pub(crate) fn root(&self) -> ObjId {
        self.root
    }

    /// Offset just past the `STOP` opcode, where a following pickle would start.
    pub(crate) fn end(&self) -> usize {
        self.end
    }

    /// The object with id `id`; ids come from this pickle, so they are always valid.
    pub(crate) fn get(&self, id: ObjId) -> &Object {
        &self.objects[id]
    }
}

/// A pickle that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PickleError {
    /// Offset of the offending opcode in the buffer given to [`load`].
    pub offset: usize,
    /// What is wrong.
    pub reason: String,
}

/// Integers wider than this many bytes are refused; PyTorch's widest is its 10-byte magic.
const MAX_BIG_INT_BYTES: usize = 64;

/// Decodes the pickle starting at `bytes[start]`.
pub(crate) fn load(bytes: &[u8], start: usize) -> Result<Pickle, PickleError> {
    let mut machine = Machine {
        bytes,
        pos: start,
        op_start: start,
        objects: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    loop {
        machine.op_start = machine.pos;
        if let Some(root) = machine.step()? {
            return Ok(Pickle {
                objects: machine.objects,
                root,
                end: machine.pos,
            });
        }
    }
}

struct Machine<'a> {
    bytes: &'a [u8],
    pos: usize,
    op_start: usize,
    objects: Vec<Object>,
    stack: Vec<ObjId>,
    /// Stack lengths at each `MARK`, innermost last.
    marks: Vec<usize>,
    memo: HashMap<u32, ObjId>,
}

impl<'a> Machine<'a> {
    /// Executes one opcode; returns the root object at `STOP`.
    fn step(&mut self) -> Result<Option<ObjId>, PickleError> {
        let opcode = self.read_u8()?;
        match opcode {
            op::PROTO => {
                let protocol = self.read_u8()?;
                if protocol > 5 {
                    return Err(self.error(format!("unsupported pickle protocol {protocol}")));
                }
            }
            op::FRAME => {
                // A length hint only.
                self.take(8)?;
            }
            op::STOP => return self.pop().map(Some),
            op::MARK => self.marks.push(self.stack.len()),
            op::POP => {
                self.pop()?;
            }
            op::POP_MARK => {
                self.pop_mark()?;
            }
            op::DUP => {
                let top = self.top()?;
                self.stack.push(top);
            }
            op::NONE => self.push(Object::None),
            op::NEWTRUE => self.push(Object::Bool(true)),
            op::NEWFALSE => self.push(Object::Bool(false)),
            op::BININT => {
                let value = i32::from_le_bytes(self.array()?);
                self.push(Object::Int(value.into()));
            }
            op::BININT1 => {
                let value = self.read_u8()?;
                self.push(Object::Int(value.into()));
            }
            op::BININT2 => {
                let value = u16::from_le_bytes(self.array()?);
                self.push(Object::Int(value.into()));
            }
            op::LONG1 | op::LONG4 => {
                let len = self.read_len(if opcode == op::LONG1 { 1 } else { 4 })?;
                self.push_long(len)?;
            }
            op::BINFLOAT => {
                let value = f64::from_be_bytes(self.array()?);
                self.push(Object::Float(value));
            }
            // Strings and bytes; the opcode fixes the width of the length prefix and the type.
            op::BINUNICODE
            | op::SHORT_BINUNICODE
            | op::BINUNICODE8
            | op::BINSTRING
            | op::SHORT_BINSTRING
            | op::BINBYTES
            | op::SHORT_BINBYTES
            | op::BINBYTES8 => {
                let width = match opcode {
                    op::SHORT_BINUNICODE | op::SHORT_BINSTRING | op::SHORT_BINBYTES => 1,
                    op::BINUNICODE8 | op::BINBYTES8 => 8,
                    _ => 4,
                };
                let len = self.read_len(width)?;
                let object = match opcode {
                    op::BINUNICODE | op::SHORT_BINUNICODE | op::BINUNICODE8 => {
                        Object::Str(self.read_utf8(len)?)
                    }
                    // Python 2 `str`, which Python 3 decodes as Latin-1.
                    op::BINSTRING | op::SHORT_BINSTRING => {
                        Object::Str(self.take(len)?.iter().map(|&b| char::from(b)).collect())
                    }
                    _ => Object::Bytes(self.take(len)?.to_vec()),
                };
                self.push(object);
            }
            op::EMPTY_TUPLE => self.push(Object::Tuple(Vec::new())),
            op::EMPTY_LIST => self.push(Object::List(Vec::new())),
            op::EMPTY_DICT => self.push(Object::Dict(Vec::new())),
            op::EMPTY_SET => self.push(Object::Set(Vec::new())),
            op::TUPLE => {
                let items = self.pop_mark()?;
                self.push(Object::Tuple(items));
            }
            op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                let len = usize::from(opcode - op::TUPLE1 + 1);
                let items = self.pop_n(len)?;
                self.push(Object::Tuple(items));
            }
            op::LIST => {
                let items = self.pop_mark()?;
                self.push(Object::List(items));
            }
            op::DICT => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                self.push(Object::Dict(pairs));
            }
            op::FROZENSET => {
                let items = self.pop_mark()?;
                self.push(Object::Set(items));
            }
            op::APPEND => {
                let item = self.pop()?;
                self.extend_list(vec![item])?;
            }
            op::APPENDS => {
                let items = self.pop_mark()?;
                self.extend_list(items)?;
            }
            op::SETITEM => {
                let items = self.pop_n(2)?;
                let pairs = self.pairs(items)?;
                self.extend_dict(pairs)?;
            }
            op::SETITEMS => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                self.extend_dict(pairs)?;
            }
            op::ADDITEMS => {
                let items = self.pop_mark()?;
                let set = self.top()?;
                match &mut self.objects[set] {
                    Object::Set(existing) => existing.extend(items),
                    other => {
                        let found = other.describe();
                        return Err(self.error(format!("ADDITEMS on {found}, expected a set")));
                    }
                }
            }
            op::BINPUT => {
                let index = self.read_u8()?;
                self.memo_put(index.into())?;
            }
            op::LONG_BINPUT => {
                let index = u32::from_le_bytes(self.array()?);
                self.memo_put(index)?;
            }
            op::MEMOIZE => {
                let index = u32::try_from(self.memo.len())
                    .map_err(|_| self.error("memo is full".to_string()))?;
                self.memo_put(index)?;
            }
            op::BINGET => {
                let index = self.read_u8()?;
                self.memo_get(index.into())?;
            }
            op::LONG_BINGET => {
                let index = u32::from_le_bytes(self.array()?);
                self.memo_get(index)?;
            }
            op::GLOBAL => {
                let module = self.read_line()?;
                let name = self.read_line()?;
                self.push(Object::Global { module, name });
            }
            op::STACK_GLOBAL => {
                let name = self.pop_str()?;
                let module = self.pop_str()?;
                self.push(Object::Global { module, name });
            }
            op::REDUCE | op::NEWOBJ => {
                let args = self.pop()?;
                let callable = self.pop()?;
                self.push_reduce(callable, args)?;
            }
            op::BUILD => {
                let state = self.pop()?;
                let target = self.top()?;
                // A dict's state holds attributes (OrderedDict's `_metadata`): not needed.
                if let Object::Reduce { state: slot, .. } = &mut self.objects[target] {
                    *slot = Some(state);
                }
            }
            op::BINPERSID => {
                let pid = self.pop()?;
                self.push(Object::PersistentId(pid));
            }
            _ => {
                return Err(self.error(format!(
                    "unsupported opcode 0x{opcode:02x} ({:?})",
                    char::from(opcode)
                )))
            }
        }
        Ok(None)
    }

    fn error(&self, reason: String) -> PickleError {
        PickleError {
            offset: self.op_start,
            reason,
        }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            let available = self.bytes.len().saturating_sub(self.pos);
            return Err(self.error(format!(
                "unexpected end of data: needs {len} more bytes, {available} left"
            )));
        };
        let bytes: &'a [u8] = self.bytes;
        let slice = &bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], PickleError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn read_u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.array::<1>()?[0])
    }

    /// A length prefix of `width` bytes (1, 4 or 8). 4-byte lengths are signed in some
    /// opcodes (`BINSTRING`), so the top bit is refused for all.
    fn read_len(&mut self, width: usize) -> Result<usize, PickleError> {
        let mut array = [0; 8];
        array[..width].copy_from_slice(self.take(width)?);
        let len = u64::from_le_bytes(array);
        if width == 4 && len > i32::MAX as u64 {
            return Err(self.error(format!("length {len} is out of range")));
        }
        usize::try_from(len).map_err(|_| self.error(format!("length {len} is out of range")))
    }

    fn read_utf8(&mut self, len: usize) -> Result<String, PickleError> {
        let bytes = self.take(len)?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text.to_string()),
            Err(_) => Err(self.error("string is not valid UTF-8".to_string())),
        }
    }

    fn read_line(&mut self) -> Result<String, PickleError> {
        let rest = &self.bytes[self.pos.min(self.bytes.len())..];
        let Some(len) = rest.iter().position(|&b| b == b'\n') else {
            return Err(self.error("unterminated GLOBAL name".to_string()));
        };
        let line = self.take(len + 1)?;
        let text = std::str::from_utf8(&line[..len])
            .map_err(|_| self.error("GLOBAL name is not UTF-8".to_string()))?;
        Ok(text.to_string())
    }

    fn push(&mut self, object: Object) {
        self.objects.push(object);
        self.stack.push(self.objects.len() - 1);
    }

    fn push_long(&mut self, len: usize) -> Result<(), PickleError> {
        if len > MAX_BIG_INT_BYTES {
            return Err(self.error(format!("{len}-byte integer is too large")));
        }
        let bytes = self.take(len)?;
        let object = if len <= 8 {
            // Sign-extend the little-endian two's complement bytes to 8.
            let fill = if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
                0xff
            } else {
                0
            };
            let mut array = [fill; 8];
            array[..len].copy_from_slice(bytes);
            Object::Int(i64::from_le_bytes(array))
        } else {
            Object::BigInt(bytes.to_vec())
        };
        self.push(object);
        Ok(())
    }

    fn push_reduce(&mut self, callable: ObjId, args: ObjId) -> Result<(), PickleError> {
        let is_ordered_dict = matches!(
            &self.objects[callable],
            Object::Global { module, name } if module == "collections" && name == "OrderedDict"
        );
        let object = match &self.objects[args] {
            Object::Tuple(items) if is_ordered_dict && items.is_empty() => Object::Dict(Vec::new()),
            Object::Tuple(_) => Object::Reduce {
                callable,
                args,
                state: None,
            },
            other => {
                let found = other.describe();
                return Err(self.error(format!("call arguments are {found}, expected a tuple")));
            }
        };
        self.push(object);
        Ok(())
    }

    fn pop(&mut self) -> Result<ObjId, PickleError> {
        if self
            .marks
            .last()
            .is_some_and(|&mark| mark >= self.stack.len())
        {
            return Err(self.error("stack underflow: popped past a MARK".to_string()));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.error("stack underflow".to_string()))
    }

    fn pop_n(&mut self, count: usize) -> Result<Vec<ObjId>, PickleError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() < floor + count {
            return Err(self.error(format!("stack underflow: needs {count} items")));
        }
        Ok(self.stack.split_off(self.stack.len() - count))
    }

    fn pop_mark(&mut self) -> Result<Vec<ObjId>, PickleError> {
        let mark = self
            .marks
            .pop()
            .ok_or_else(|| self.error("no MARK on the stack".to_string()))?;
        Ok(self.stack.split_off(mark))
    }

    fn pop_str(&mut self) -> Result<String, PickleError> {
        let id = self.pop()?;
        match &self.objects[id] {
            Object::Str(text) => Ok(text.clone()),
            other => {
                let found = other.describe();
                Err(self.error(format!("STACK_GLOBAL operand is {found}, expected a str")))
            }
        }
    }

    fn top(&self) -> Result<ObjId, PickleError> {
        match (self.stack.last(), self.marks.last()) {
            (Some(_), Some(&mark)) if mark >= self.stack.len() => {
                Err(self.error("stack underflow: no object above the MARK".to_string()))
            }
            (Some(&top), _) => Ok(top),
            (None, _) => Err(self.error("stack underflow".to_string())),
        }
    }

    fn pairs(&self, items: Vec<ObjId>) -> Result<Vec<(ObjId, ObjId)>, PickleError> {
        if !items.len().is_multiple_of(2) {
            return Err(self.error(format!("{} items cannot form key/value pairs", items.len())));
        }
        Ok(items
            .chunks_exact(2)
            .map(|pair| (pair[0], pair[1]))
            .collect())
    }

    fn extend_list(&mut self, items: Vec<ObjId>) -> Result<(), PickleError> {
        let list = self.top()?;
        match &mut self.objects[list] {
            Object::List(existing) => existing.extend(items),
            other => {
                let found = other.describe();
                return Err(self.error(format!("APPEND to {found}, expected a list")));
            }
        }
        Ok(())
    }

    fn extend_dict(&mut self, pairs: Vec<(ObjId, ObjId)>) -> Result<(), PickleError> {
        let dict = self.top()?;
        match &mut self.objects[dict] {
            Object::Dict(existing) => existing.extend(pairs),
            other => {
                let found = other.describe();
                return Err(self.error(format!("SETITEM on {found}, expected a dict")));
            }
        }
        Ok(())
    }

    fn memo_put(&mut self, index: u32) -> Result<(), PickleError> {
        let top = self.top()?;
        self.memo.insert(index, top);
        Ok(())
    }

    fn memo_get(&mut self, index: u32) -> Result<(), PickleError> {
        let id = *self
            .memo
            .get(&index)
            .ok_or_else(|| self.error(format!("memo has no entry {index}")))?;
        self.stack.push(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
