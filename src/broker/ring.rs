//! [`Ring`]: a double-ended queue whose every operation but growing is plain index
//! arithmetic the panic audit can prove, for the history (`history.rs`).
//!
//! `VecDeque` would do, but its `push_back` can grow the buffer, and whether the
//! optimiser sees that it cannot (after a capacity check) depends on whether it
//! inlines `push_back`, which it decides anew at every build. Here growing is a
//! method of its own, which the broker runs contained, and pushing never grows: a
//! full ring hands the value back.

/// A queue of at most `capacity()` values in a circular buffer of slots.
#[derive(Debug)]
pub(crate) struct Ring<T> {
    /// `len` values, the first at `head`, wrapping around; the other slots are `None`.
    slots: Vec<Option<T>>,
    head: usize,
    len: usize,
}

impl<T> Default for Ring<T> {
    fn default() -> Self {
        Self { slots: Vec::new(), head: 0, len: 0 }
    }
}

impl<T> Ring<T> {
    /// Values held.
    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Values it can hold without growing.
    #[inline(always)]
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The slot of the `i`th value (from the front). Both below the capacity, so the
    /// sum is below twice it, which a `Vec` keeps far from overflowing.
    #[inline(always)]
    fn slot(&self, i: usize) -> usize {
        let at = self.head.wrapping_add(i);
        if at >= self.slots.len() { at.wrapping_sub(self.slots.len()) } else { at }
    }

    /// The `i`th value from the front.
    #[inline(always)]
    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len {
            return None;
        }
        self.slots.get(self.slot(i))?.as_ref()
    }

    /// The `i`th value from the front, to change.
    #[inline(always)]
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        if i >= self.len {
            return None;
        }
        let at = self.slot(i);
        self.slots.get_mut(at)?.as_mut()
    }

    #[inline(always)]
    pub(crate) fn front(&self) -> Option<&T> {
        self.get(0)
    }

    #[inline(always)]
    pub(crate) fn back(&self) -> Option<&T> {
        self.get(self.len.checked_sub(1)?)
    }

    /// Appends `value`, or hands it back if the ring is full.
    #[inline(always)]
    pub(crate) fn push_back(&mut self, value: T) -> Result<(), T> {
        if self.len >= self.slots.len() {
            return Err(value);
        }
        let at = self.slot(self.len);
        let Some(slot) = self.slots.get_mut(at) else { return Err(value) };
        // The slot is empty (it is outside the `len` values), so nothing is dropped.
        if slot.is_some() {
            return Err(value);
        }
        *slot = Some(value);
        self.len = self.len.wrapping_add(1);
        Ok(())
    }

    /// Takes the first value.
    #[inline(always)]
    pub(crate) fn pop_front(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let value = self.slots.get_mut(self.head)?.take();
        self.head = self.slot(1);
        self.len = self.len.wrapping_sub(1);
        value
    }

    /// Takes the last value.
    #[inline(always)]
    pub(crate) fn pop_back(&mut self) -> Option<T> {
        let last = self.len.checked_sub(1)?;
        let at = self.slot(last);
        let value = self.slots.get_mut(at)?.take();
        self.len = last;
        value
    }

    /// Grows to hold at least `capacity` values, keeping their order. Allocates: the
    /// broker runs it contained.
    pub(crate) fn grow_to(&mut self, capacity: usize) {
        if capacity <= self.slots.len() {
            return;
        }
        // Unwrap the values to the start, then add empty slots after them. (`head`
        // is always a slot's index, or 0; the `min` keeps `rotate_left` from ever
        // being handed more than the length, where it panics.)
        let mid = self.head.min(self.slots.len());
        self.slots.rotate_left(mid);
        self.head = 0;
        self.slots.resize_with(capacity, || None);
    }

    /// Drops every value. Runs their destructors: the broker runs it contained.
    pub(crate) fn clear(&mut self) {
        for slot in &mut self.slots {
            *slot = None;
        }
        self.head = 0;
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_is_a_queue_that_never_grows_by_itself() {
        let mut ring = Ring::default();
        assert_eq!(ring.push_back(1), Err(1));
        ring.grow_to(3);
        for round in 0..10 {
            assert_eq!(ring.push_back(round), Ok(()));
            assert_eq!(ring.push_back(round + 100), Ok(()));
            assert_eq!(ring.front(), Some(&round));
            assert_eq!(ring.back(), Some(&(round + 100)));
            assert_eq!(ring.pop_front(), Some(round));
            assert_eq!(ring.pop_back(), Some(round + 100));
            assert_eq!(ring.len(), 0);
        }
        for v in 0..3 {
            ring.push_back(v).unwrap();
        }
        assert_eq!(ring.push_back(9), Err(9));
        assert_eq!(ring.pop_front(), Some(0));
        ring.push_back(3).unwrap();
        // Wrapped: growing keeps the order.
        ring.grow_to(5);
        ring.push_back(4).unwrap();
        assert_eq!((0..4).map(|i| *ring.get(i).unwrap()).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(ring.get(4), None);
        *ring.get_mut(0).unwrap() = 10;
        assert_eq!(ring.pop_front(), Some(10));
        ring.clear();
        assert_eq!((ring.len(), ring.front()), (0, None));
        assert_eq!(ring.pop_back(), None);
    }
}
