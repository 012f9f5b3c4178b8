//! Deletion vectors: which rows of one chunk are dead (replaced by an upsert, deleted by a
//! tombstone). A chunk's rows never change; deleting a row sets its bit here.
//!
//! A vector is shared with query snapshots behind an `Arc`: the writer changes it through
//! `Arc::make_mut`, which copies it only while a snapshot still holds the old one (a chunk's
//! vector is `CHUNK_ROWS` bits, 8 KiB), so readers never see a vector change under them.

use datafusion::arrow::array::BooleanArray;
use datafusion::arrow::buffer::{BooleanBuffer, Buffer};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeletionVector {
    words: Vec<u64>,
    rows: usize,
    deleted: usize,
}

impl DeletionVector {
    pub fn new(rows: usize) -> DeletionVector {
        DeletionVector {
            words: vec![0; rows.div_ceil(64)],
            rows,
            deleted: 0,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn deleted(&self) -> usize {
        self.deleted
    }

    /// Marks `row` dead; false if it already was.
    pub fn delete(&mut self, row: usize) -> bool {
        assert!(row < self.rows, "row {row} of a chunk of {} rows", self.rows);
        let (word, bit) = (row / 64, 1u64 << (row % 64));
        if self.words[word] & bit != 0 {
            return false;
        }
        self.words[word] |= bit;
        self.deleted += 1;
        true
    }

    pub fn is_deleted(&self, row: usize) -> bool {
        row < self.rows && self.words[row / 64] & (1u64 << (row % 64)) != 0
    }

    /// The dead rows, ascending.
    pub fn deleted_rows(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(index, &word)| {
            let mut word = word;
            std::iter::from_fn(move || {
                if word == 0 {
                    return None;
                }
                let bit = word.trailing_zeros() as usize;
                word &= word - 1;
                Some(index * 64 + bit)
            })
        })
    }

    /// True for live rows: the mask `filter_record_batch` takes. Arrow's bit order is the
    /// words' little-endian order, the same as this vector's.
    pub fn live_mask(&self) -> BooleanArray {
        let words: Vec<u64> = self.words.iter().map(|word| !word).collect();
        BooleanArray::new(BooleanBuffer::new(Buffer::from_vec(words), 0, self.rows), None)
    }

    /// The vectors of consecutive pieces (rows each, `None` for no deletes) as one.
    pub fn concat<'a>(pieces: impl Iterator<Item = (usize, Option<&'a DeletionVector>)>) -> DeletionVector {
        let pieces: Vec<(usize, Option<&DeletionVector>)> = pieces.collect();
        let mut joined = DeletionVector::new(pieces.iter().map(|(rows, _)| rows).sum());
        let mut start = 0;
        for (rows, vector) in pieces {
            if let Some(vector) = vector {
                assert_eq!(vector.rows, rows);
                for row in vector.deleted_rows() {
                    joined.delete(start + row);
                }
            }
            start += rows;
        }
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletes_masks_and_concatenation() {
        let mut vector = DeletionVector::new(130);
        assert!(vector.delete(0) && vector.delete(64) && vector.delete(129));
        assert!(!vector.delete(64));
        assert_eq!(vector.deleted(), 3);
        assert_eq!(vector.deleted_rows().collect::<Vec<_>>(), [0, 64, 129]);
        let mask = vector.live_mask();
        assert_eq!(mask.len(), 130);
        assert_eq!(mask.true_count(), 127);
        assert!(!mask.value(64) && mask.value(65));
        let joined = DeletionVector::concat([(130, Some(&vector)), (5, None), (130, Some(&vector))].into_iter());
        assert_eq!(joined.deleted_rows().collect::<Vec<_>>(), [0, 64, 129, 135, 199, 264]);
    }
}
