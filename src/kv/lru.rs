//! An intrusive doubly linked list over ids `0..n`: the free list of the device tier and the
//! LRU of the host tier. O(1) unlink, push at either end, pop from the front.

const NIL: u32 = u32::MAX;

/// A list of some of the ids `0..n`, each at most once.
#[derive(Debug, Clone)]
pub struct LruList {
    prev: Vec<u32>,
    next: Vec<u32>,
    linked: Vec<bool>,
    head: u32,
    tail: u32,
    len: usize,
}

impl LruList {
    /// A list holding every id of `0..n` in order.
    pub fn full(n: usize) -> Self {
        assert!(n < NIL as usize, "too many ids");
        let n32 = n as u32;
        LruList {
            prev: (0..n32).map(|i| if i == 0 { NIL } else { i - 1 }).collect(),
            next: (0..n32)
                .map(|i| if i + 1 == n32 { NIL } else { i + 1 })
                .collect(),
            linked: vec![true; n],
            head: if n == 0 { NIL } else { 0 },
            tail: if n == 0 { NIL } else { n32 - 1 },
            len: n,
        }
    }

    /// Ids on the list.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `id` is on the list.
    pub fn contains(&self, id: u32) -> bool {
        self.linked[id as usize]
    }

    /// The first id (the next to be taken).
    pub fn front(&self) -> Option<u32> {
        (self.head != NIL).then_some(self.head)
    }

    /// Takes `id` off the list; it must be on it.
    pub fn unlink(&mut self, id: u32) {
        let i = id as usize;
        assert!(self.linked[i], "id {id} is not on the list");
        let (prev, next) = (self.prev[i], self.next[i]);
        if prev == NIL {
            self.head = next;
        } else {
            self.next[prev as usize] = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.prev[next as usize] = prev;
        }
        self.prev[i] = NIL;
        self.next[i] = NIL;
        self.linked[i] = false;
        self.len -= 1;
    }

    /// Appends `id` (most recently used); it must not be on the list.
    pub fn push_back(&mut self, id: u32) {
        let i = id as usize;
        assert!(!self.linked[i], "id {id} is already on the list");
        self.prev[i] = self.tail;
        self.next[i] = NIL;
        if self.tail == NIL {
            self.head = id;
        } else {
            self.next[self.tail as usize] = id;
        }
        self.tail = id;
        self.linked[i] = true;
        self.len += 1;
    }

    /// Prepends `id` (taken first); it must not be on the list.
    pub fn push_front(&mut self, id: u32) {
        let i = id as usize;
        assert!(!self.linked[i], "id {id} is already on the list");
        self.next[i] = self.head;
        self.prev[i] = NIL;
        if self.head == NIL {
            self.tail = id;
        } else {
            self.prev[self.head as usize] = id;
        }
        self.head = id;
        self.linked[i] = true;
        self.len += 1;
    }

    /// The ids front to back, after checking the links: every back link matches, no id
    /// repeats, and the count and membership flags agree with the walk.
    pub fn checked_order(&self) -> Result<Vec<u32>, String> {
        let mut seen = vec![false; self.linked.len()];
        let mut order = Vec::with_capacity(self.len);
        let (mut cur, mut prev) = (self.head, NIL);
        while cur != NIL {
            let i = cur as usize;
            if seen[i] {
                return Err(format!("list cycles at {cur}"));
            }
            seen[i] = true;
            if self.prev[i] != prev {
                return Err(format!("{cur} has a broken back link"));
            }
            order.push(cur);
            prev = cur;
            cur = self.next[i];
        }
        if prev != self.tail || order.len() != self.len {
            return Err(format!(
                "list holds {} ids, counter says {}",
                order.len(),
                self.len
            ));
        }
        if seen != self.linked {
            return Err("membership flags disagree with the list".into());
        }
        Ok(order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlink_and_push_keep_order() {
        let mut l = LruList::full(4);
        l.unlink(1);
        l.unlink(0);
        assert_eq!(l.front(), Some(2));
        l.push_back(0);
        l.push_front(1);
        assert_eq!(l.checked_order().unwrap(), vec![1, 2, 3, 0]);
        for id in [1, 2, 3, 0] {
            l.unlink(id);
        }
        assert!(l.is_empty() && l.front().is_none());
        l.checked_order().unwrap();
    }
}
