//! A sensor's rolling window of its last `bound` values, in a `VecDeque` whose capacity stops at
//! `bound`.
//!
//! Plugins keep such a window per sensor (the forest's 100 values, the z-score's values and their
//! times), in every lane, so its spare capacity is paid once per sensor. A `VecDeque` grows by
//! doubling: a window of 100 ends at a capacity of 128, 28% of it never used. [`make_room`]
//! doubles too while the window is young (a sensor seen a few times keeps a few slots), but its
//! last growth stops at `bound` exactly. It only reserves: which values leave the window, and when,
//! stays the plugin's own rule.

use std::collections::VecDeque;

/// The smallest capacity a window grows to (a `VecDeque`'s own first growth).
const FIRST_CAPACITY: usize = 4;

/// Makes room in `window` for one more value, growing it to twice its capacity but not past `bound`
/// (nor by less than one slot, for a window already past its bound).
pub fn make_room<T>(window: &mut VecDeque<T>, bound: usize) {
    if window.len() < window.capacity() {
        return;
    }
    let most = bound.max(1);
    let wanted = (window.capacity() * 2).clamp(FIRST_CAPACITY.min(most), most);
    window.reserve_exact(wanted.saturating_sub(window.len()).max(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The capacities `window` takes as `pushes` values are pushed, each after [`make_room`], the
    /// oldest dropped once it holds `bound`.
    fn capacities(bound: usize, pushes: u32) -> (Vec<usize>, Vec<u32>) {
        let mut window = VecDeque::new();
        let mut seen = Vec::new();
        for value in 0..pushes {
            if window.len() == bound {
                window.pop_front();
            }
            make_room(&mut window, bound);
            window.push_back(value);
            if seen.last() != Some(&window.capacity()) {
                seen.push(window.capacity());
            }
        }
        (seen, window.into_iter().collect())
    }

    #[test]
    fn a_window_doubles_while_young_and_stops_at_its_bound() {
        assert_eq!(capacities(100, 250), (vec![4, 8, 16, 32, 64, 100], (150..250).collect()));
        assert_eq!(capacities(3, 10), (vec![3], vec![7, 8, 9]));
        assert_eq!(capacities(1, 5), (vec![1], vec![4]));
    }

    #[test]
    fn a_window_past_its_bound_grows_by_one_slot() {
        let mut window: VecDeque<u32> = VecDeque::with_capacity(6);
        window.extend(0..6);
        make_room(&mut window, 4);
        assert_eq!(window.capacity(), 7);
    }
}
