//! Link leases as plain data (no I/O): what this controller must claim, release and renew at its
//! next flush, what it holds, and what a flush's lease step found. Several controllers share
//! one MySQL/MariaDB database (`[cluster]`, docs/scale-out.md); per node, the `node_leases` row
//! names the controller holding its link. The writer (`writer.rs`) runs one lease step in every
//! flush's transaction (`db.rs`) and applies its outcome here.
//!
//! Rules: a claim on a newer connection takes the lease over (the older holder learns it at
//! its next step and closes its stale link); the holder renews every flush; a controller whose
//! steps fail for a whole lease term has no authority left, so it closes its links and takes
//! none until a step succeeds again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The controller's place in a cluster (`[cluster]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This controller's id, unique among the controllers sharing the database.
    pub id: String,
    /// How long a lease lasts after its holder's last renewal.
    pub lease_ttl: Duration,
    /// Whether this controller competes for the pusher lease (it pushes to a Pushgateway).
    pub pusher: bool,
    /// Where the others forward actions to this controller (`[cluster] peer_url`), published
    /// in the `controllers` table.
    pub peer_url: Option<String>,
}

/// Longest controller id (the `holder` column).
pub const MAX_CONTROLLER_ID: usize = 64;

/// A controller id: 1–64 characters of letters, digits, `.`, `-`, `_`.
pub fn check_controller_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_CONTROLLER_ID {
        return Err(format!(
            "{id:?}: must be 1 to {MAX_CONTROLLER_ID} characters"
        ));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        return Err(format!(
            "{id:?}: only letters, digits, '.', '-' and '_' are allowed"
        ));
    }
    Ok(())
}

/// A node held by another controller of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteHolder {
    pub node: String,
    pub holder: String,
    /// Where the holder takes forwarded actions (`None`: it has no peer endpoint).
    pub peer_url: Option<String>,
}

/// What this controller asks of a node's lease at the next step; the last wish wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wish {
    /// The node's agent linked here at `connected_ms` (this controller's clock).
    Claim { connected_ms: i64 },
    /// The node's link here ended: give the lease up if this controller still holds it.
    Release,
}

/// One step's work, taken from the book under its lock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseWork {
    pub claims: Vec<(String, i64)>,
    pub releases: Vec<String>,
    /// Nodes of the batch recorded offline: their rows are written only where no other
    /// controller holds the node.
    pub offline_nodes: Vec<String>,
}

impl LeaseWork {
    pub fn is_empty(&self) -> bool {
        self.claims.is_empty() && self.releases.is_empty()
    }
}

/// What the database answered to one step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseOutcome {
    /// Every node this controller holds after the step, with its epoch.
    pub held: BTreeMap<String, i64>,
    /// Nodes whose lapsed lease this controller swept, with the controller that had held it.
    pub swept: Vec<(String, String)>,
    /// Whether this controller holds the pusher lease (always false when it does not compete).
    pub pusher: bool,
    /// Every node another controller holds now, with its holder.
    pub elsewhere: BTreeMap<String, RemoteHolder>,
}

/// What the rest of the controller sees of the leases (published after every step).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseStatus {
    /// The last step succeeded within a lease term: this controller may hold links.
    pub authority: bool,
    pub held: BTreeMap<String, i64>,
    /// Nodes this controller held or claimed before the step and another holds now, with the
    /// wall-clock time (unix ms) the step's work was taken: a link of such a node that was
    /// established before that time is stale.
    pub lost: Vec<String>,
    pub lost_before_ms: i64,
    pub pusher: bool,
    /// Nodes other controllers hold, with their holder, as of the last successful step (kept
    /// while authority lasts: the view of the fleet is a lease term old at most).
    pub elsewhere: BTreeMap<String, RemoteHolder>,
    /// Steps finished (successful or not).
    pub steps: u64,
}

/// The book: wishes not yet written, and what the last successful step said.
#[derive(Debug)]
pub struct LeaseBook {
    ttl: Duration,
    wishes: BTreeMap<String, Wish>,
    held: BTreeMap<String, i64>,
    last_ok: Option<Instant>,
    pusher: bool,
    elsewhere: BTreeMap<String, RemoteHolder>,
    steps: u64,
}

impl LeaseBook {
    pub fn new(ttl: Duration) -> LeaseBook {
        LeaseBook {
            ttl,
            wishes: BTreeMap::new(),
            held: BTreeMap::new(),
            last_ok: None,
            pusher: false,
            elsewhere: BTreeMap::new(),
            steps: 0,
        }
    }

    pub fn claim(&mut self, node: &str, connected_ms: i64) {
        self.wishes
            .insert(node.to_string(), Wish::Claim { connected_ms });
    }

    pub fn release(&mut self, node: &str) {
        self.wishes.insert(node.to_string(), Wish::Release);
    }

    /// Takes the wishes for one step.
    pub fn take(&mut self, offline_nodes: Vec<String>) -> LeaseWork {
        let mut work = LeaseWork {
            offline_nodes,
            ..LeaseWork::default()
        };
        for (node, wish) in std::mem::take(&mut self.wishes) {
            match wish {
                Wish::Claim { connected_ms } => work.claims.push((node, connected_ms)),
                Wish::Release => work.releases.push(node),
            }
        }
        work
    }

    /// The step failed: its wishes come back unless a newer one was made meanwhile. Whether
    /// this controller still has authority (a successful step within the last lease term).
    pub fn failed(&mut self, work: LeaseWork, now: Instant) -> bool {
        for (node, connected_ms) in work.claims {
            self.wishes
                .entry(node)
                .or_insert(Wish::Claim { connected_ms });
        }
        for node in work.releases {
            self.wishes.entry(node).or_insert(Wish::Release);
        }
        self.steps += 1;
        self.authority(now)
    }

    /// The step succeeded: the nodes lost since the last one (held or claimed before, held by
    /// another now).
    pub fn succeeded(
        &mut self,
        work: &LeaseWork,
        outcome: &LeaseOutcome,
        now: Instant,
    ) -> Vec<String> {
        let mut before: BTreeSet<&String> = self.held.keys().collect();
        before.extend(work.claims.iter().map(|(n, _)| n));
        for n in &work.releases {
            before.remove(n);
        }
        let lost = before
            .into_iter()
            .filter(|n| !outcome.held.contains_key(*n) && !self.wishes.contains_key(*n))
            .cloned()
            .collect();
        self.held = outcome.held.clone();
        self.pusher = outcome.pusher;
        self.elsewhere = outcome.elsewhere.clone();
        self.last_ok = Some(now);
        self.steps += 1;
        lost
    }

    /// A successful step within the last lease term.
    pub fn authority(&self, now: Instant) -> bool {
        self.last_ok
            .is_some_and(|at| now.saturating_duration_since(at) < self.ttl)
    }

    pub fn status(&self, now: Instant, lost: Vec<String>, lost_before_ms: i64) -> LeaseStatus {
        let authority = self.authority(now);
        LeaseStatus {
            authority,
            held: if authority {
                self.held.clone()
            } else {
                BTreeMap::new()
            },
            lost,
            lost_before_ms,
            pusher: authority && self.pusher,
            elsewhere: if authority {
                self.elsewhere.clone()
            } else {
                BTreeMap::new()
            },
            steps: self.steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(nodes: &[(&str, i64)]) -> LeaseOutcome {
        LeaseOutcome {
            held: nodes.iter().map(|(n, e)| (n.to_string(), *e)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn controller_ids_are_checked() {
        assert!(check_controller_id("ops-1.dc_2").is_ok());
        assert!(check_controller_id("").is_err());
        assert!(check_controller_id("a b").is_err());
        assert!(check_controller_id(&"x".repeat(65)).is_err());
    }

    #[test]
    fn the_last_wish_wins_and_a_failed_step_keeps_newer_wishes() {
        let mut book = LeaseBook::new(Duration::from_secs(10));
        book.claim("a", 1);
        book.release("a");
        book.claim("b", 2);
        let work = book.take(vec![]);
        assert_eq!(work.claims, vec![("b".to_string(), 2)]);
        assert_eq!(work.releases, vec!["a".to_string()]);
        // Meanwhile b went away: the newer wish stays when the step is handed back.
        book.release("b");
        let t = Instant::now();
        assert!(!book.failed(work, t), "never succeeded: no authority");
        let again = book.take(vec![]);
        assert_eq!(again.releases, vec!["a".to_string(), "b".to_string()]);
        assert!(again.claims.is_empty());
    }

    #[test]
    fn nodes_taken_over_by_another_controller_are_reported_lost() {
        let mut book = LeaseBook::new(Duration::from_secs(10));
        let t = Instant::now();
        book.claim("a", 1);
        book.claim("b", 1);
        let work = book.take(vec![]);
        // Another controller's newer claim on b won.
        assert_eq!(
            book.succeeded(&work, &held(&[("a", 3)]), t),
            vec!["b".to_string()]
        );
        // Next step: a is taken over too; c was claimed meanwhile and is still wished, so not
        // lost even though the step did not see it.
        book.claim("c", 5);
        let work = book.take(vec![]);
        book.claim("c", 6);
        assert_eq!(book.succeeded(&work, &held(&[]), t), vec!["a".to_string()]);
        // A released node is not lost.
        book.release("c");
        let work = book.take(vec![]);
        assert!(book.succeeded(&work, &held(&[]), t).is_empty());
    }

    #[test]
    fn authority_lapses_a_lease_term_after_the_last_successful_step() {
        let mut book = LeaseBook::new(Duration::from_secs(10));
        let t = Instant::now();
        assert!(!book.authority(t));
        let work = book.take(vec![]);
        book.succeeded(&work, &held(&[("a", 1)]), t);
        assert!(book.authority(t + Duration::from_secs(9)));
        let work = book.take(vec![]);
        assert!(book.failed(work, t + Duration::from_secs(9)));
        let status = book.status(t + Duration::from_secs(10), vec![], 0);
        assert!(!status.authority);
        assert!(
            status.held.is_empty(),
            "no authority: nothing counts as held"
        );
    }
}
