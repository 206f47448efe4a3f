//! The order torch's CPU `topk` and `sort` give to equal values.
//!
//! transformers' beam search ranks with `torch.topk` and `Tensor.sort`, whose CPU kernels
//! run libstdc++'s `std::nth_element`, `std::partial_sort` and `std::sort` (neither
//! stable) on `(value, index)` pairs compared by value alone (`TopKImpl.h`,
//! `SortingKernel.cpp`). Running scores tie exactly more and more often as they grow (the
//! float32 spacing near -512 is 6e-5), and which of two tied candidates becomes beam 0
//! decides which `Exp(1)` draws each beam gets next step: a stable order parts from
//! transformers' tokens after a few dozen steps. This replays those algorithms step for
//! step (`__introselect`, `__introsort_loop`, `__heap_select`, the insertion sorts), so
//! ties come out in torch's order. Only the order among equal values depends on it.

type Elem = (f32, usize);

/// torch's "largest first" comparator: NaN above everything, then by value.
#[inline]
fn comp(x: &Elem, y: &Elem) -> bool {
    (x.0.is_nan() && !y.0.is_nan()) || x.0 > y.0
}

/// Indices of `torch.topk(values, k)` (largest, sorted) on a CPU tensor, best first.
pub(crate) fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let n = values.len();
    let k = k.min(n);
    if k == 0 {
        return Vec::new();
    }
    let mut a: Vec<Elem> = values.iter().copied().zip(0..).collect();
    if k * 64 <= n {
        heap_select(&mut a, 0, k, n);
        sort_heap(&mut a, 0, k);
    } else {
        nth_element(&mut a, k - 1);
        sort(&mut a, 0, k - 1); // the k-th is in place already
    }
    a[..k].iter().map(|e| e.1).collect()
}

/// Indices of `values.sort(descending=True)` on a CPU tensor (`stable=False`).
pub(crate) fn sort_descending(values: &[f32]) -> Vec<usize> {
    let mut a: Vec<Elem> = values.iter().copied().zip(0..).collect();
    let n = a.len();
    sort(&mut a, 0, n);
    a.into_iter().map(|e| e.1).collect()
}

/// `floor(log2(n))` for `n >= 1`, as libstdc++'s `__lg`.
fn lg(n: usize) -> usize {
    (usize::BITS - 1 - n.leading_zeros()) as usize
}

/// `std::nth_element` (`__introselect`) over the whole slice.
fn nth_element(a: &mut [Elem], nth: usize) {
    let (mut first, mut last) = (0, a.len());
    if first == last || nth == last {
        return;
    }
    let mut depth = 2 * lg(last - first);
    while last - first > 3 {
        if depth == 0 {
            heap_select(a, first, nth + 1, last);
            a.swap(first, nth);
            return;
        }
        depth -= 1;
        let cut = partition_pivot(a, first, last);
        if cut <= nth {
            first = cut;
        } else {
            last = cut;
        }
    }
    insertion_sort(a, first, last);
}

/// `std::sort` of `a[first..last]`: introsort, then the final insertion sort.
fn sort(a: &mut [Elem], first: usize, last: usize) {
    if first == last {
        return;
    }
    introsort_loop(a, first, last, 2 * lg(last - first));
    if last - first > THRESHOLD {
        insertion_sort(a, first, first + THRESHOLD);
        for i in first + THRESHOLD..last {
            unguarded_linear_insert(a, i);
        }
    } else {
        insertion_sort(a, first, last);
    }
}

/// libstdc++'s `_S_threshold`: ranges this short are left to the insertion sort.
const THRESHOLD: usize = 16;

fn introsort_loop(a: &mut [Elem], first: usize, mut last: usize, mut depth: usize) {
    while last - first > THRESHOLD {
        if depth == 0 {
            heap_select(a, first, last, last); // std::__partial_sort(first, last, last)
            sort_heap(a, first, last);
            return;
        }
        depth -= 1;
        let cut = partition_pivot(a, first, last);
        introsort_loop(a, cut, last, depth);
        last = cut;
    }
}

fn partition_pivot(a: &mut [Elem], first: usize, last: usize) -> usize {
    let mid = first + (last - first) / 2;
    move_median_to_first(a, first, first + 1, mid, last - 1);
    unguarded_partition(a, first + 1, last, first)
}

fn move_median_to_first(a: &mut [Elem], result: usize, x: usize, y: usize, z: usize) {
    let m = if comp(&a[x], &a[y]) {
        if comp(&a[y], &a[z]) {
            y
        } else if comp(&a[x], &a[z]) {
            z
        } else {
            x
        }
    } else if comp(&a[x], &a[z]) {
        x
    } else if comp(&a[y], &a[z]) {
        z
    } else {
        y
    };
    a.swap(result, m);
}

fn unguarded_partition(a: &mut [Elem], mut first: usize, mut last: usize, pivot: usize) -> usize {
    loop {
        while comp(&a[first], &a[pivot]) {
            first += 1;
        }
        last -= 1;
        while comp(&a[pivot], &a[last]) {
            last -= 1;
        }
        if first >= last {
            return first;
        }
        a.swap(first, last);
        first += 1;
    }
}

fn insertion_sort(a: &mut [Elem], first: usize, last: usize) {
    if first == last {
        return;
    }
    for i in first + 1..last {
        if comp(&a[i], &a[first]) {
            a[first..=i].rotate_right(1);
        } else {
            unguarded_linear_insert(a, i);
        }
    }
}

fn unguarded_linear_insert(a: &mut [Elem], mut last: usize) {
    let val = a[last];
    while comp(&val, &a[last - 1]) {
        a[last] = a[last - 1];
        last -= 1;
    }
    a[last] = val;
}

fn heap_select(a: &mut [Elem], first: usize, middle: usize, last: usize) {
    make_heap(a, first, middle);
    for i in middle..last {
        if comp(&a[i], &a[first]) {
            pop_heap(a, first, middle, i);
        }
    }
}

fn make_heap(a: &mut [Elem], first: usize, last: usize) {
    let len = last - first;
    if len < 2 {
        return;
    }
    let mut parent = (len - 2) / 2;
    loop {
        let value = a[first + parent];
        adjust_heap(a, first, parent, len, value);
        if parent == 0 {
            return;
        }
        parent -= 1;
    }
}

fn sort_heap(a: &mut [Elem], first: usize, mut last: usize) {
    while last - first > 1 {
        last -= 1;
        pop_heap(a, first, last, last);
    }
}

fn pop_heap(a: &mut [Elem], first: usize, last: usize, result: usize) {
    let value = a[result];
    a[result] = a[first];
    adjust_heap(a, first, 0, last - first, value);
}

fn adjust_heap(a: &mut [Elem], first: usize, mut hole: usize, len: usize, value: Elem) {
    let top = hole;
    let mut second = hole;
    while second < len.saturating_sub(1) / 2 {
        second = 2 * (second + 1);
        if comp(&a[first + second], &a[first + second - 1]) {
            second -= 1;
        }
        a[first + hole] = a[first + second];
        hole = second;
    }
    if len & 1 == 0 && second == (len - 2) / 2 {
        second = 2 * (second + 1);
        a[first + hole] = a[first + second - 1];
        hole = second - 1;
    }
    // __push_heap
    while hole > top {
        let parent = (hole - 1) / 2;
        if !comp(&a[first + parent], &value) {
            break;
        }
        a[first + hole] = a[first + parent];
        hole = parent;
    }
    a[first + hole] = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Orders torch 2.x printed on CPU for tied inputs (`torch.topk(x, k).indices`,
    /// `x.sort(descending=True).indices`); the last topk case is beam sampling's step 54
    /// at batch 2 (gpt2-2x128), where a stable order keeps beam 4 first and torch beam 7.
    #[test]
    fn ties_come_out_in_torchs_order() {
        let t = [
            -545.9063f32,
            -545.9063,
            -545.917,
            -546.0514,
            -546.0867,
            -546.104,
            -546.12177,
            -546.12915,
        ];
        assert_eq!(top_k(&t, 4), vec![1, 0, 2, 3]);
        let ones = [1.0f32; 8];
        assert_eq!(top_k(&ones, 4), vec![6, 5, 4, 7]);
        assert_eq!(sort_descending(&ones), (0..8).collect::<Vec<_>>());
        // past the insertion-sort threshold (16): introsort's partition reorders ties
        let ones = [1.0f32; 20];
        let want = [
            10, 19, 18, 17, 16, 15, 14, 13, 12, 11, 0, 9, 8, 7, 6, 5, 4, 3, 2, 1,
        ];
        assert_eq!(sort_descending(&ones), want);
        let x = [
            3.0f32, 1., 3., 2., 3., 1., 2., 3., 3., 1., 2., 2., 3., 1., 1., 3., 2., 3., 2., 1.,
        ];
        assert_eq!(top_k(&x, 6), vec![7, 15, 12, 17, 8, 0]);
        let want = [
            0, 2, 4, 7, 8, 17, 12, 15, 3, 18, 6, 10, 11, 16, 19, 14, 13, 9, 5, 1,
        ];
        assert_eq!(sort_descending(&x), want);
    }

    proptest::proptest! {
        /// Whatever the order among ties, the values are those of a plain sort, and the
        /// top `k` are the sort's first `k` values (NaN first, as torch).
        #[test]
        fn orders_are_sorts(values in proptest::collection::vec(-3i32..3, 1..90), k in 1usize..40) {
            let v: Vec<f32> = values.iter().map(|&x| if x == -3 { f32::NAN } else { x as f32 }).collect();
            let key = |x: f32| if x.is_nan() { f32::INFINITY } else { x };
            let mut want: Vec<f32> = v.iter().map(|&x| key(x)).collect();
            want.sort_by(|a, b| b.total_cmp(a));
            let sorted: Vec<f32> = sort_descending(&v).iter().map(|&i| key(v[i])).collect();
            proptest::prop_assert_eq!(&sorted, &want);
            let top: Vec<f32> = top_k(&v, k).iter().map(|&i| key(v[i])).collect();
            proptest::prop_assert_eq!(&top[..], &want[..k.min(v.len())]);
            let mut seen = sort_descending(&v);
            seen.sort_unstable();
            proptest::prop_assert_eq!(seen, (0..v.len()).collect::<Vec<_>>());
        }
    }
}
