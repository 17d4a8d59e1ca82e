//! The referral forest: who brought in whom. Each account is a node; an edge runs from a
//! referrer to each account it referred. A referrer exists before its referees, so the
//! graph is a forest and node indices follow signup order.
//!
//! Every walk is iterative (an explicit queue or a parent pointer loop) and bounded by
//! [`WALK_DEPTH_MAX`]: a chain a million deep is ordinary data, not a stack overflow.

use crate::hash::FastMap;
use std::collections::BTreeMap;
use std::hash::Hash;

use chrono::{DateTime, Datelike, Utc};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;
use serde::{Deserialize, Serialize};

/// The deepest any walk goes, up or down. Deeper than any real network; a walk that hits
/// it reports that it was cut rather than going on.
pub const WALK_DEPTH_MAX: usize = 1 << 20;
/// Most accounts the forest holds (node indices are `u32`).
pub const ACCOUNTS_MAX: usize = u32::MAX as usize - 1;
/// Most members returned by one downline page.
pub const MEMBERS_PAGE_SIZE_MAX: usize = 1000;

const _: () = assert!(WALK_DEPTH_MAX <= ACCOUNTS_MAX);

/// A calendar month, for growth reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Month {
    pub year: i32,
    pub month: u32,
}

impl Month {
    pub fn of(at: DateTime<Utc>) -> Month {
        Month {
            year: at.year(),
            month: at.month(),
        }
    }
}

/// Why the forest refuses a change: the log holds something the domain rules forbid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ForestError {
    #[error("account {account} signed up twice")]
    DuplicateAccount { account: String },
    #[error("referrer {referrer} of {account} has not signed up")]
    ReferrerNotFound { account: String, referrer: String },
    #[error("account {account} is not in the referral forest")]
    AccountNotFound { account: String },
    #[error("accounts_max is {ACCOUNTS_MAX}")]
    Full,
}

#[derive(Clone, Debug)]
struct Member<K> {
    account: K,
    /// When it signed up (the network view's signup analytics read it here rather than
    /// keeping a second map over every account).
    joined: DateTime<Utc>,
    /// Depth below the root of its tree (a root is 0); kept so upline and level queries
    /// know the length of a walk before taking it.
    depth: u32,
}

/// The upline of an account, nearest referrer first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upline<K> {
    /// `levels[0]` is the referrer, `levels[1]` the referrer's referrer, ...
    pub levels: Vec<K>,
    /// True if the walk stopped at the requested level count before reaching a root.
    pub truncated: bool,
}

/// How many downline members sit at each level below an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownlineCounts {
    /// `per_level[0]` counts direct referrals, `per_level[1]` their referrals, ...
    pub per_level: Vec<u64>,
    pub total: u64,
    /// True if the walk stopped at the requested depth with members below it.
    pub truncated: bool,
}

/// One page of the members at one level below an account, in signup order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MembersPage<K> {
    pub members: Vec<K>,
    /// Members at that level in all.
    pub total: u64,
}

/// The referral forest.
#[derive(Clone, Debug)]
pub struct ReferralForest<K> {
    graph: DiGraph<Member<K>, ()>,
    index: FastMap<K, NodeIndex>,
    /// The referrer of each node, by node index; `u32::MAX` for roots. Kept beside the
    /// graph because the upline walk is the hottest query and a flat array is fastest.
    parent: Vec<u32>,
}

const NO_PARENT: u32 = u32::MAX;

impl<K> Default for ReferralForest<K> {
    fn default() -> Self {
        ReferralForest {
            graph: DiGraph::default(),
            index: FastMap::default(),
            parent: Vec::new(),
        }
    }
}

impl<K: Copy + Eq + Hash + std::fmt::Display> ReferralForest<K> {
    pub fn new() -> Self {
        ReferralForest::default()
    }

    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    pub fn contains(&self, account: &K) -> bool {
        self.index.contains_key(account)
    }

    /// Adds an account that signed up at `joined`, referred by `referrer` (which must
    /// already be in the forest, so no cycle can form).
    pub fn add(
        &mut self,
        account: K,
        referrer: Option<K>,
        joined: DateTime<Utc>,
    ) -> Result<(), ForestError> {
        if self.index.contains_key(&account) {
            return Err(ForestError::DuplicateAccount {
                account: account.to_string(),
            });
        }
        if self.graph.node_count() >= ACCOUNTS_MAX {
            return Err(ForestError::Full);
        }
        let parent =
            match referrer {
                Some(referrer) => Some(*self.index.get(&referrer).ok_or_else(|| {
                    ForestError::ReferrerNotFound {
                        account: account.to_string(),
                        referrer: referrer.to_string(),
                    }
                })?),
                None => None,
            };
        let depth = parent.map_or(0, |parent| self.graph[parent].depth.saturating_add(1));
        let node = self.graph.add_node(Member {
            account,
            joined,
            depth,
        });
        debug_assert_eq!(node.index(), self.parent.len(), "nodes are never removed");
        self.parent
            .push(parent.map_or(NO_PARENT, |parent| parent.index() as u32));
        if let Some(parent) = parent {
            self.graph.add_edge(parent, node, ());
        }
        self.index.insert(account, node);
        Ok(())
    }

    /// The referrer of `account`, if it has one.
    pub fn referrer(&self, account: &K) -> Result<Option<K>, ForestError> {
        let node = self.node(account)?;
        Ok(self
            .parent_of(node)
            .map(|parent| self.graph[parent].account))
    }

    /// How deep `account` sits below the root of its tree (a root is 0).
    pub fn depth(&self, account: &K) -> Result<u32, ForestError> {
        Ok(self.graph[self.node(account)?].depth)
    }

    /// The upline of `account`, at most `levels_max` levels (capped at [`WALK_DEPTH_MAX`]).
    pub fn upline(&self, account: &K, levels_max: usize) -> Result<Upline<K>, ForestError> {
        let levels_max = levels_max.min(WALK_DEPTH_MAX);
        let mut node = self.node(account)?;
        let mut levels = Vec::new();
        while let Some(parent) = self.parent_of(node) {
            if levels.len() == levels_max {
                return Ok(Upline {
                    levels,
                    truncated: true,
                });
            }
            levels.push(self.graph[parent].account);
            node = parent;
        }
        Ok(Upline {
            levels,
            truncated: false,
        })
    }

    /// How many members sit at each level below `account`, down to `depth_max` levels
    /// (capped at [`WALK_DEPTH_MAX`]).
    pub fn downline_counts(
        &self,
        account: &K,
        depth_max: usize,
    ) -> Result<DownlineCounts, ForestError> {
        let depth_max = depth_max.min(WALK_DEPTH_MAX);
        let mut per_level = Vec::new();
        let mut truncated = false;
        self.walk_levels(self.node(account)?, depth_max, |level, members| {
            if level == depth_max {
                truncated = !members.is_empty();
                return false;
            }
            per_level.push(members.len() as u64);
            true
        });
        let total = per_level.iter().sum();
        Ok(DownlineCounts {
            per_level,
            total,
            truncated,
        })
    }

    /// The members at `level` below `account` (1 = direct referrals), in signup order,
    /// skipping `offset` and returning at most `limit` (capped at
    /// [`MEMBERS_PAGE_SIZE_MAX`]).
    pub fn downline_members(
        &self,
        account: &K,
        level: usize,
        offset: usize,
        limit: usize,
    ) -> Result<MembersPage<K>, ForestError> {
        let limit = limit.min(MEMBERS_PAGE_SIZE_MAX);
        let mut page = MembersPage {
            members: Vec::new(),
            total: 0,
        };
        if level == 0 || level > WALK_DEPTH_MAX {
            return Ok(page);
        }
        self.walk_levels(self.node(account)?, level, |depth, members| {
            if depth + 1 < level {
                return true;
            }
            let mut in_order = members.to_vec();
            in_order.sort_unstable();
            page.total = in_order.len() as u64;
            page.members = in_order
                .iter()
                .skip(offset)
                .take(limit)
                .map(|node| self.graph[*node].account)
                .collect();
            false
        });
        Ok(page)
    }

    /// All downline members of `account` (not itself), down to [`WALK_DEPTH_MAX`] levels,
    /// in breadth-first order.
    pub fn downline(&self, account: &K) -> Result<Vec<K>, ForestError> {
        let mut all = Vec::new();
        self.walk_levels(self.node(account)?, WALK_DEPTH_MAX, |_, members| {
            all.extend(members.iter().map(|node| self.graph[*node].account));
            true
        });
        Ok(all)
    }

    /// How many members joined the downline of `account` in each month.
    pub fn growth_per_month(&self, account: &K) -> Result<BTreeMap<Month, u64>, ForestError> {
        let mut growth = BTreeMap::new();
        self.walk_levels(self.node(account)?, WALK_DEPTH_MAX, |_, members| {
            for node in members {
                *growth
                    .entry(Month::of(self.graph[*node].joined))
                    .or_insert(0) += 1;
            }
            true
        });
        Ok(growth)
    }

    /// Every account in signup order with its referrer and month of joining.
    pub fn members_in_order(&self) -> impl Iterator<Item = (K, Option<K>, Month)> + '_ {
        self.graph.node_indices().map(move |node| {
            let member = &self.graph[node];
            let referrer = self
                .parent_of(node)
                .map(|parent| self.graph[parent].account);
            (member.account, referrer, Month::of(member.joined))
        })
    }

    /// The dense index of `account`: its place in signup order (0 for the first).
    pub fn index_of(&self, account: &K) -> Option<usize> {
        self.index.get(account).map(|node| node.index())
    }

    /// When `account` signed up.
    pub fn joined_at(&self, account: &K) -> Result<DateTime<Utc>, ForestError> {
        Ok(self.graph[self.node(account)?].joined)
    }

    fn node(&self, account: &K) -> Result<NodeIndex, ForestError> {
        self.index
            .get(account)
            .copied()
            .ok_or_else(|| ForestError::AccountNotFound {
                account: account.to_string(),
            })
    }

    fn parent_of(&self, node: NodeIndex) -> Option<NodeIndex> {
        match self.parent[node.index()] {
            NO_PARENT => None,
            parent => Some(NodeIndex::new(parent as usize)),
        }
    }

    /// Breadth-first, one level at a time: calls `visit(depth, members)` with the members
    /// `depth + 1` levels below `root` (depth 0 = direct referrals) until `visit` returns
    /// false, a level is empty, or `depth_max` levels were visited. Passes the level at
    /// `depth_max` too (unexpanded) so callers can tell whether the walk was cut.
    fn walk_levels(
        &self,
        root: NodeIndex,
        depth_max: usize,
        mut visit: impl FnMut(usize, &[NodeIndex]) -> bool,
    ) {
        let mut level = vec![root];
        let mut next = Vec::new();
        for depth in 0..=depth_max {
            next.clear();
            for node in &level {
                next.extend(self.graph.neighbors_directed(*node, Direction::Outgoing));
            }
            if next.is_empty() || !visit(depth, &next) || depth == depth_max {
                return;
            }
            std::mem::swap(&mut level, &mut next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(year: i32, month: u32) -> DateTime<Utc> {
        chrono::TimeZone::with_ymd_and_hms(&Utc, year, month, 1, 0, 0, 0).unwrap()
    }

    /// 1 ← 2 ← 4, 1 ← 3, 2 ← 5, 2 ← 6; 7 is its own root.
    fn small() -> ReferralForest<u32> {
        let mut forest = ReferralForest::new();
        forest.add(1, None, at(2026, 1)).unwrap();
        forest.add(2, Some(1), at(2026, 1)).unwrap();
        forest.add(3, Some(1), at(2026, 2)).unwrap();
        forest.add(4, Some(2), at(2026, 2)).unwrap();
        forest.add(5, Some(2), at(2026, 3)).unwrap();
        forest.add(6, Some(2), at(2026, 3)).unwrap();
        forest.add(7, None, at(2026, 3)).unwrap();
        forest
    }

    #[test]
    fn upline_is_level_by_level_and_capped() {
        let forest = small();
        assert_eq!(forest.upline(&4, 10).unwrap().levels, vec![2, 1]);
        assert!(!forest.upline(&4, 10).unwrap().truncated);
        let capped = forest.upline(&4, 1).unwrap();
        assert_eq!((capped.levels, capped.truncated), (vec![2], true));
        assert!(forest.upline(&1, 3).unwrap().levels.is_empty());
        assert_eq!(forest.referrer(&5).unwrap(), Some(2));
        assert!(matches!(
            forest.upline(&99, 3),
            Err(ForestError::AccountNotFound { .. })
        ));
    }

    #[test]
    fn downline_counts_members_and_growth() {
        let forest = small();
        let counts = forest.downline_counts(&1, 10).unwrap();
        assert_eq!(counts.per_level, vec![2, 3]);
        assert_eq!((counts.total, counts.truncated), (5, false));
        let cut = forest.downline_counts(&1, 1).unwrap();
        assert_eq!((cut.per_level, cut.truncated), (vec![2], true));

        let page = forest.downline_members(&1, 2, 1, 1).unwrap();
        assert_eq!((page.members, page.total), (vec![5], 3));
        let all = forest.downline_members(&1, 2, 0, 10).unwrap();
        assert_eq!(all.members, vec![4, 5, 6], "signup order");
        assert!(forest
            .downline_members(&1, 3, 0, 10)
            .unwrap()
            .members
            .is_empty());

        let mut downline = forest.downline(&1).unwrap();
        downline.sort_unstable();
        assert_eq!(downline, vec![2, 3, 4, 5, 6]);
        let growth = forest.growth_per_month(&1).unwrap();
        assert_eq!(
            growth.into_iter().collect::<Vec<_>>(),
            vec![
                (
                    Month {
                        year: 2026,
                        month: 1
                    },
                    1
                ),
                (
                    Month {
                        year: 2026,
                        month: 2
                    },
                    2
                ),
                (
                    Month {
                        year: 2026,
                        month: 3
                    },
                    2
                ),
            ]
        );
    }

    #[test]
    fn refuses_unknown_referrers_and_duplicates() {
        let mut forest = small();
        assert!(matches!(
            forest.add(8, Some(42), at(2026, 4)),
            Err(ForestError::ReferrerNotFound { .. })
        ));
        assert!(matches!(
            forest.add(3, None, at(2026, 4)),
            Err(ForestError::DuplicateAccount { .. })
        ));
        assert_eq!(forest.len(), 7);
    }

    #[test]
    fn a_chain_a_million_deep_walks_without_recursion() {
        const DEPTH: u32 = 1_000_000;
        let mut forest = ReferralForest::new();
        forest.add(0u32, None, at(2026, 1)).unwrap();
        for account in 1..=DEPTH {
            forest.add(account, Some(account - 1), at(2026, 1)).unwrap();
        }
        assert_eq!(forest.depth(&DEPTH).unwrap(), DEPTH);
        let upline = forest.upline(&DEPTH, usize::MAX).unwrap();
        assert_eq!(upline.levels.len(), DEPTH as usize);
        assert_eq!(upline.levels.last(), Some(&0));
        assert!(!upline.truncated);

        let counts = forest.downline_counts(&0, usize::MAX).unwrap();
        assert_eq!(counts.total, u64::from(DEPTH));
        assert!(counts.per_level.iter().all(|count| *count == 1));
        let deepest = forest.downline_members(&0, DEPTH as usize, 0, 10).unwrap();
        assert_eq!(deepest.members, vec![DEPTH]);
        assert_eq!(forest.downline(&0).unwrap().len(), DEPTH as usize);
        // Drop explicitly: the forest's own drop must not recurse either.
        drop(forest);
    }
}
