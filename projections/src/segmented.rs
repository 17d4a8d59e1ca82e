//! [`Segmented`]: an append-only list that grows like a `Vec` while small and then in
//! fixed-size segments, so a list of millions of entries never needs a reallocation that
//! copies it (and holds it twice) and never carries more than one segment of spare
//! capacity, while a list of a few entries costs no more than a `Vec`.
//!
//! The journal keeps one per ledger account (its balance history): a few global accounts
//! (cash, revenue, commission expense) get an entry for nearly every event of the log,
//! hundreds of thousands of affiliate accounts get a few.

/// Entries per sealed segment. A power of two, so a `Vec` that grew by doubling to it
/// has exactly this capacity and seals without a copy.
pub const SEGMENT_ENTRIES: usize = 4096;
const _: () = assert!(SEGMENT_ENTRIES.is_power_of_two());

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segmented<T> {
    /// Full segments of exactly [`SEGMENT_ENTRIES`] entries, in order.
    sealed: Vec<Box<[T]>>,
    /// The entries after the sealed segments: fewer than [`SEGMENT_ENTRIES`].
    tail: Vec<T>,
}

impl<T> Default for Segmented<T> {
    fn default() -> Self {
        Segmented {
            sealed: Vec::new(),
            tail: Vec::new(),
        }
    }
}

impl<T> Segmented<T> {
    pub fn len(&self) -> usize {
        self.sealed.len() * SEGMENT_ENTRIES + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sealed.is_empty() && self.tail.is_empty()
    }

    pub fn push(&mut self, value: T) {
        self.tail.push(value);
        if self.tail.len() == SEGMENT_ENTRIES {
            // A list this long will keep growing: the next segment is allocated whole.
            let full = std::mem::replace(&mut self.tail, Vec::with_capacity(SEGMENT_ENTRIES));
            self.sealed.push(full.into_boxed_slice());
        }
    }

    pub fn last(&self) -> Option<&T> {
        match self.tail.last() {
            Some(last) => Some(last),
            None => self.sealed.last().and_then(|segment| segment.last()),
        }
    }

    pub fn last_mut(&mut self) -> Option<&mut T> {
        match self.tail.last_mut() {
            Some(last) => Some(last),
            None => self
                .sealed
                .last_mut()
                .and_then(|segment| segment.last_mut()),
        }
    }

    pub fn get(&self, index: usize) -> Option<&T> {
        let sealed = self.sealed.len() * SEGMENT_ENTRIES;
        if index < sealed {
            Some(&self.sealed[index / SEGMENT_ENTRIES][index % SEGMENT_ENTRIES])
        } else {
            self.tail.get(index - sealed)
        }
    }

    /// The index of the first entry for which `pred` is false, `pred` being true for a
    /// prefix of the list and false for the rest (as `slice::partition_point`).
    pub fn partition_point(&self, mut pred: impl FnMut(&T) -> bool) -> usize {
        let full = self
            .sealed
            .partition_point(|segment| pred(segment.last().expect("sealed segments are full")));
        match self.sealed.get(full) {
            Some(segment) => full * SEGMENT_ENTRIES + segment.partition_point(pred),
            None => full * SEGMENT_ENTRIES + self.tail.partition_point(pred),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.sealed
            .iter()
            .flat_map(|segment| segment.iter())
            .chain(self.tail.iter())
    }
}

impl<T> FromIterator<T> for Segmented<T> {
    fn from_iter<I: IntoIterator<Item = T>>(values: I) -> Self {
        let mut list = Segmented::default();
        for value in values {
            list.push(value);
        }
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_the_vec_it_replaces_across_segment_boundaries() {
        for len in [
            0,
            1,
            5,
            SEGMENT_ENTRIES - 1,
            SEGMENT_ENTRIES,
            3 * SEGMENT_ENTRIES + 7,
        ] {
            let plain: Vec<u64> = (0..len as u64).map(|value| value * 3).collect();
            let list: Segmented<u64> = plain.iter().copied().collect();
            assert_eq!(list.len(), plain.len());
            assert_eq!(list.is_empty(), plain.is_empty());
            assert_eq!(list.last(), plain.last());
            assert!(list.iter().eq(plain.iter()));
            for index in [
                0,
                1,
                SEGMENT_ENTRIES - 1,
                SEGMENT_ENTRIES,
                len.saturating_sub(1),
                len,
            ] {
                assert_eq!(list.get(index), plain.get(index), "len {len} index {index}");
            }
            for bound in [0, 1, 2, 100, 3 * SEGMENT_ENTRIES as u64, u64::MAX] {
                assert_eq!(
                    list.partition_point(|value| *value < bound),
                    plain.partition_point(|value| *value < bound),
                    "len {len} bound {bound}"
                );
            }
        }
    }

    #[test]
    fn last_mut_changes_the_last_entry_in_a_sealed_segment_too() {
        let mut list: Segmented<u32> = (0..SEGMENT_ENTRIES as u32).collect();
        *list.last_mut().unwrap() = 7;
        assert_eq!(list.last(), Some(&7));
        assert_eq!(list.get(SEGMENT_ENTRIES - 1), Some(&7));
    }
}
