//! The lock-based reference (`lockref.rs`) extended the straightforward way to priorities and
//! FIFO message groups, as its [`Order`]: the same `Mutex`, `Condvar`, slab, lease generations
//! and deadline heap, only the ready list differs.
//!
//! * [`Priorities`]: a `BinaryHeap` of `(priority, Reverse(sequence), slot)`: the highest
//!   priority first, first ready first within a priority (the sequence is taken when a message
//!   becomes ready, so a released or expired message goes to the back of its priority). A
//!   message keeps its priority for life (one byte per slot). Strict: no aging.
//! * [`Groups`]: a `HashMap` from group to the `VecDeque` of its messages in send order (the
//!   head first), a FIFO of turns (a group with a ready head, or an ungrouped message) and a
//!   `HashSet` of the groups with a lease out. A group has at most one message ready or leased:
//!   its head, which leaves the group only when deleted or taken; then the group's next message
//!   joins the back of the FIFO. A released or expired head joins the back again, still its
//!   group's head. Groups are served round-robin. A group's entry is removed when its last
//!   message leaves, so memory follows the messages held (a send to a group with no messages
//!   allocates its `VecDeque`, as the straightforward code does).

use super::lockref::{Order, Tag};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};

/// Highest priority first, FIFO within a priority; see the module docs.
pub struct Priorities {
    /// `(priority, Reverse(sequence), slot)`: a max-heap, so the highest priority, then the
    /// lowest sequence, is on top.
    heap: BinaryHeap<(u8, Reverse<u64>, u32)>,
    /// Each slot's priority, set by its send.
    priority: Vec<u8>,
    /// Taken by each message that becomes ready.
    sequence: u64,
}

impl Priorities {
    fn push(&mut self, index: u32) {
        self.sequence += 1;
        let priority = self.priority[index as usize];
        self.heap.push((priority, Reverse(self.sequence), index));
    }
}

impl Order for Priorities {
    fn new(capacity: usize) -> Self {
        Priorities {
            heap: BinaryHeap::with_capacity(capacity),
            priority: vec![0; capacity],
            sequence: 0,
        }
    }

    fn sent(&mut self, index: u32, tag: Tag) -> bool {
        self.priority[index as usize] = tag.priority;
        self.push(index);
        true
    }

    fn requeue(&mut self, index: u32) {
        self.push(index);
    }

    fn removed(&mut self, _index: u32) -> bool {
        false
    }

    fn pop(&mut self) -> Option<u32> {
        self.heap.pop().map(|(_, _, index)| index)
    }

    fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// A ready turn: a group's head, or a message sent without a group (a group of its own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Turn {
    Group(u64),
    Alone(u32),
}

/// FIFO message groups, served round-robin; see the module docs.
pub struct Groups {
    /// Each group's messages in send order, the head (ready or leased) first.
    members: HashMap<u64, VecDeque<u32>>,
    /// Turns ready to be delivered, first ready first.
    ready: VecDeque<Turn>,
    /// Groups whose head is leased.
    leased: HashSet<u64>,
    /// Each slot's group (`None`: sent without one).
    group: Vec<Option<u64>>,
}

impl Order for Groups {
    fn new(capacity: usize) -> Self {
        Groups {
            members: HashMap::new(),
            ready: VecDeque::with_capacity(capacity),
            leased: HashSet::new(),
            group: vec![None; capacity],
        }
    }

    fn sent(&mut self, index: u32, tag: Tag) -> bool {
        self.group[index as usize] = tag.group;
        let Some(group) = tag.group else {
            self.ready.push_back(Turn::Alone(index));
            return true;
        };
        let members = self.members.entry(group).or_default();
        members.push_back(index);
        // The first message of an idle group is its head, ready at once.
        let head = members.len() == 1;
        if head {
            self.ready.push_back(Turn::Group(group));
        }
        head
    }

    fn requeue(&mut self, index: u32) {
        match self.group[index as usize] {
            Some(group) => {
                self.leased.remove(&group);
                self.ready.push_back(Turn::Group(group));
            }
            None => self.ready.push_back(Turn::Alone(index)),
        }
    }

    fn removed(&mut self, index: u32) -> bool {
        let Some(group) = self.group[index as usize] else {
            return false;
        };
        self.leased.remove(&group);
        let members = self
            .members
            .get_mut(&group)
            .expect("a removed grouped message's group has members");
        let head = members.pop_front();
        debug_assert_eq!(head, Some(index), "only a group's head leaves it");
        if members.is_empty() {
            self.members.remove(&group);
            false
        } else {
            self.ready.push_back(Turn::Group(group));
            true
        }
    }

    fn pop(&mut self) -> Option<u32> {
        match self.ready.pop_front()? {
            Turn::Alone(index) => Some(index),
            Turn::Group(group) => {
                self.leased.insert(group);
                self.members.get(&group).and_then(|m| m.front().copied())
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }
}
