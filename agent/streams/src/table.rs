//! A bounded hash table with least-recently-used order.
//!
//! Flow tables (TCP reassembly) and connection tables (HTTP parsing) must be
//! bounded — hostile or merely large inputs must not grow memory without
//! limit — and must find the entry to evict in O(1): the least recently used
//! one for capacity eviction, and, because entries are touched in event-time
//! order, also the idlest one for idle eviction.
//!
//! Entries live in a slab (`Vec`) threaded by an intrusive doubly-linked
//! list; a hash map (foldhash) maps keys to slab slots. [`Handle`]s let a
//! caller look a key up once and then touch, read and update the entry
//! without hashing again. No allocation happens per operation once the slab
//! and map have grown to the table's capacity.

use std::collections::HashMap;
use std::hash::Hash;

const NIL: u32 = u32::MAX;

/// Position of an entry in an [`LruTable`]. Valid until the entry is
/// removed or evicted; using a stale handle is a logic error that panics
/// neither here nor later, but may address another entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Handle(u32);

struct Slot<K, V> {
    entry: Option<(K, V)>,
    prev: u32,
    next: u32,
}

/// Bounded map with O(1) lookup, insert, remove, touch and LRU pop.
pub struct LruTable<K, V> {
    map: HashMap<K, u32, foldhash::fast::RandomState>,
    slots: Vec<Slot<K, V>>,
    free: Vec<u32>,
    /// Most recently used.
    head: u32,
    /// Least recently used.
    tail: u32,
    capacity: usize,
}

impl<K: Hash + Eq + Clone, V> LruTable<K, V> {
    /// A table holding at most `capacity` entries (at least 1; at most
    /// `u32::MAX - 1`).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.clamp(1, (NIL - 1) as usize);
        LruTable {
            map: HashMap::with_hasher(foldhash::fast::RandomState::default()),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            capacity,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Maximum number of entries.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether an insert would need an eviction first.
    pub fn is_full(&self) -> bool {
        self.map.len() >= self.capacity
    }

    /// Finds `key`.
    #[inline]
    pub fn find(&self, key: &K) -> Option<Handle> {
        self.map.get(key).map(|i| Handle(*i))
    }

    /// The entry at `h`.
    #[inline]
    pub fn get(&self, h: Handle) -> Option<(&K, &V)> {
        self.slots
            .get(h.0 as usize)?
            .entry
            .as_ref()
            .map(|(k, v)| (k, v))
    }

    /// The value at `h`, mutably.
    #[inline]
    pub fn get_mut(&mut self, h: Handle) -> Option<&mut V> {
        self.slots
            .get_mut(h.0 as usize)?
            .entry
            .as_mut()
            .map(|(_, v)| v)
    }

    /// Marks `h` as the most recently used entry.
    #[inline]
    pub fn touch(&mut self, h: Handle) {
        if self.head == h.0
            || self
                .slots
                .get(h.0 as usize)
                .is_none_or(|s| s.entry.is_none())
        {
            return;
        }
        self.unlink(h.0);
        self.push_front(h.0);
    }

    /// Inserts a new entry as the most recently used one.
    ///
    /// Returns `Err((key, value))` when the table is full or the key is
    /// already present: the caller decides what to evict (see
    /// [`LruTable::pop_lru`]) or updates the existing entry.
    pub fn insert(&mut self, key: K, value: V) -> Result<Handle, (K, V)> {
        if self.is_full() || self.map.contains_key(&key) {
            return Err((key, value));
        }
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize].entry = Some((key.clone(), value));
                i
            }
            None => {
                let i = self.slots.len() as u32;
                self.slots.push(Slot {
                    entry: Some((key.clone(), value)),
                    prev: NIL,
                    next: NIL,
                });
                i
            }
        };
        self.map.insert(key, idx);
        self.push_front(idx);
        Ok(Handle(idx))
    }

    /// Removes the entry at `h`.
    pub fn remove(&mut self, h: Handle) -> Option<(K, V)> {
        let entry = self.slots.get_mut(h.0 as usize)?.entry.take()?;
        self.unlink(h.0);
        self.free.push(h.0);
        self.map.remove(&entry.0);
        Some(entry)
    }

    /// The least recently used entry, without removing it.
    pub fn peek_lru(&self) -> Option<(Handle, &K, &V)> {
        if self.tail == NIL {
            return None;
        }
        let (k, v) = self.slots[self.tail as usize].entry.as_ref()?;
        Some((Handle(self.tail), k, v))
    }

    /// Removes and returns the least recently used entry.
    pub fn pop_lru(&mut self) -> Option<(K, V)> {
        if self.tail == NIL {
            return None;
        }
        self.remove(Handle(self.tail))
    }

    /// Iterates over the entries from least to most recently used.
    pub fn iter_lru(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        let mut cur = self.tail;
        std::iter::from_fn(move || {
            if cur == NIL {
                return None;
            }
            let slot = &self.slots[cur as usize];
            cur = slot.prev;
            slot.entry.as_ref().map(|(k, v)| (k, v))
        })
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let s = &self.slots[i as usize];
            (s.prev, s.next)
        };
        if prev != NIL {
            self.slots[prev as usize].next = next;
        } else if self.head == i {
            self.head = next;
        }
        if next != NIL {
            self.slots[next as usize].prev = prev;
        } else if self.tail == i {
            self.tail = prev;
        }
        let s = &mut self.slots[i as usize];
        s.prev = NIL;
        s.next = NIL;
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        {
            let s = &mut self.slots[i as usize];
            s.prev = NIL;
            s.next = old;
        }
        if old != NIL {
            self.slots[old as usize].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_order_and_eviction() {
        let mut t = LruTable::new(3);
        let a = t.insert("a", 1).ok().unwrap_or_else(|| panic!("insert"));
        t.insert("b", 2).ok();
        t.insert("c", 3).ok();
        assert!(t.is_full());
        assert!(t.insert("d", 4).is_err());
        t.touch(a);
        assert_eq!(t.pop_lru(), Some(("b", 2)));
        assert_eq!(t.peek_lru().map(|(_, k, v)| (*k, *v)), Some(("c", 3)));
        let d = t.insert("d", 4).ok().unwrap_or_else(|| panic!("insert"));
        assert_eq!(
            t.iter_lru().map(|(k, _)| *k).collect::<Vec<_>>(),
            vec!["c", "a", "d"]
        );
        assert_eq!(t.remove(d), Some(("d", 4)));
        assert_eq!(t.find(&"d"), None);
        assert_eq!(t.len(), 2);
        *t.get_mut(a).unwrap_or_else(|| panic!("get")) = 10;
        assert_eq!(t.get(a), Some((&"a", &10)));
        assert_eq!(t.pop_lru(), Some(("c", 3)));
        assert_eq!(t.pop_lru(), Some(("a", 10)));
        assert_eq!(t.pop_lru(), None);
        assert!(t.is_empty());
    }

    #[test]
    fn duplicate_insert_rejected_and_slots_reused() {
        let mut t = LruTable::new(2);
        t.insert(1u32, ()).ok();
        assert!(t.insert(1u32, ()).is_err());
        for i in 2..1000u32 {
            t.pop_lru();
            t.insert(i, ()).ok();
        }
        assert!(t.slots.len() <= 2);
    }
}
