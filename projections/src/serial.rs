//! Serializing state straight from the live structures: [`SeqOf`] writes a sequence of
//! known length from an iterator and [`MapSeq`] a list (say of references into a hash map,
//! sorted) through a function, so a view can encode a list it keeps in chunks, in a hash
//! map or computes per entry without first collecting an owned copy. MessagePack (and
//! every other serde format we use) writes a sequence of known length exactly as it writes
//! a `Vec` of the same elements.

use std::io::{self, BufWriter, Write};

use serde::ser::{Serialize, SerializeSeq, Serializer};

/// Bytes gathered before they go to the writer: MessagePack is written a few bytes at a
/// time.
const WRITE_BUFFER_SIZE: usize = 64 * 1024;

/// Writes `value` as one MessagePack value (structs as arrays, `rmp-serde`'s default) to
/// `out`, in buffers of 64 KiB. An error of `out` comes back as it was: `rmp-serde` would
/// replace it with a message that drops its cause.
pub fn write_msgpack<T: Serialize + ?Sized>(out: &mut dyn Write, value: &T) -> io::Result<()> {
    let mut keeping = KeepFirstError { out, error: None };
    let mut buffered = BufWriter::with_capacity(WRITE_BUFFER_SIZE, &mut keeping);
    let written = rmp_serde::encode::write(&mut buffered, value);
    let flushed = buffered.flush();
    drop(buffered);
    match (written, flushed) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(error), _) => Err(keeping
            .error
            .take()
            .unwrap_or_else(|| io::Error::new(io::ErrorKind::InvalidData, error.to_string()))),
        (Ok(()), Err(error)) => Err(keeping.error.take().unwrap_or(error)),
    }
}

/// Writes to `out`, keeping the first error it returns.
struct KeepFirstError<'a> {
    out: &'a mut dyn Write,
    error: Option<io::Error>,
}

impl KeepFirstError<'_> {
    /// Keeps `error` and returns a stand-in for it (an `io::Error` is not `Clone`).
    fn keep(&mut self, error: io::Error) -> io::Error {
        let stand_in = io::Error::new(error.kind(), error.to_string());
        if error.kind() != io::ErrorKind::Interrupted {
            self.error.get_or_insert(error);
        }
        stand_in
    }
}

impl Write for KeepFirstError<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.out.write(bytes).map_err(|error| self.keep(error))
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes).map_err(|error| self.keep(error))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush().map_err(|error| self.keep(error))
    }
}

/// A sequence of `len` elements, produced by `items` each time it is serialized.
pub struct SeqOf<F> {
    len: usize,
    items: F,
}

impl<F, I> SeqOf<F>
where
    F: Fn() -> I,
    I: Iterator,
    I::Item: Serialize,
{
    /// `items()` must yield exactly `len` elements (serializing asserts it: a wrong
    /// length would write a corrupt state).
    pub fn new(len: usize, items: F) -> SeqOf<F> {
        SeqOf { len, items }
    }
}

impl<F, I> Serialize for SeqOf<F>
where
    F: Fn() -> I,
    I: Iterator,
    I::Item: Serialize,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The length up front: a format that needs it (MessagePack does) would otherwise
        // buffer the whole sequence to count it.
        let mut seq = serializer.serialize_seq(Some(self.len))?;
        let mut written = 0usize;
        for item in (self.items)() {
            seq.serialize_element(&item)?;
            written += 1;
        }
        assert_eq!(
            written, self.len,
            "a sequence announced {} elements and yielded {written}",
            self.len
        );
        seq.end()
    }
}

/// The elements of `items`, each serialized as `map` makes it.
pub struct MapSeq<T, F> {
    items: Vec<T>,
    map: F,
}

impl<T, F, U> MapSeq<T, F>
where
    F: Fn(&T) -> U,
    U: Serialize,
{
    pub fn new(items: Vec<T>, map: F) -> MapSeq<T, F> {
        MapSeq { items, map }
    }
}

impl<T, F, U> Serialize for MapSeq<T, F>
where
    F: Fn(&T) -> U,
    U: Serialize,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.items.len()))?;
        for item in &self.items {
            seq.serialize_element(&(self.map)(item))?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sequence_encodes_like_the_vec_of_its_elements() {
        let values: Vec<(u32, String)> = (0..300).map(|n| (n * 7, format!("v{n}"))).collect();
        let streamed = SeqOf::new(values.len(), || values.iter().map(|(n, s)| (n, s.as_str())));
        assert_eq!(
            rmp_serde::to_vec(&streamed).unwrap(),
            rmp_serde::to_vec(&values).unwrap()
        );
        assert_eq!(
            serde_json::to_string(&streamed).unwrap(),
            serde_json::to_string(&values).unwrap()
        );
        let mapped = MapSeq::new(values.iter().collect(), |(n, s)| (*n, s.len()));
        let lengths: Vec<(u32, usize)> = values.iter().map(|(n, s)| (*n, s.len())).collect();
        assert_eq!(
            rmp_serde::to_vec(&mapped).unwrap(),
            rmp_serde::to_vec(&lengths).unwrap()
        );
    }

    #[test]
    #[should_panic(expected = "announced 3 elements and yielded 2")]
    fn a_wrong_length_is_a_bug_caught_loudly() {
        let short = SeqOf::new(3, || [1u8, 2].into_iter());
        let _ = rmp_serde::to_vec(&short);
    }
}
