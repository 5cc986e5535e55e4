//! Every Redis key a fleet uses, in one place.
//!
//! All start with `cutover:{NAME}:`, so several fleets share one Redis
//! without meeting, an operator can list one fleet's keys with
//! `SCAN MATCH cutover:{NAME}:*`, and the braces make a Redis Cluster put
//! one fleet's keys in one slot (the scripts touch several at once).
//!
//! | key | type | holds | expires |
//! |---|---|---|---|
//! | `leader` | string | `TOKEN REPLICA` of the lease holder | `lease` after the last renewal |
//! | `epoch` | integer | the fencing epoch, +1 at each new lease | never |
//! | `replicas` | hash | replica → last sync, Unix ms | never (the leader drops entries older than an hour) |
//! | `rollout:ROUTE` | hash | `seq`, `doc` (JSON): the fleet's rollout of ROUTE | never |
//! | `counts:ROUTE:STAGE` | hash | replica/incarnation → its counts on that stage (JSON) | a day after the last push |
//! | `feedback:HOUR` | hash | request-id digest → `USED JUDGED UNIX_SECS ROUTE VERSION` | two hours after the last write |
//! | `cache:KEY` | string | one cached answer | the route's `ttl` |

/// Key names for one fleet.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(fleet: &str) -> Keys {
        Keys {
            prefix: format!("cutover:{{{fleet}}}:"),
        }
    }

    fn key(&self, rest: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + rest.len());
        k.push_str(&self.prefix);
        k.push_str(rest);
        k
    }

    pub fn leader(&self) -> String {
        self.key("leader")
    }

    pub fn epoch(&self) -> String {
        self.key("epoch")
    }

    pub fn replicas(&self) -> String {
        self.key("replicas")
    }

    pub fn rollout(&self, route: &str) -> String {
        self.key(&format!("rollout:{route}"))
    }

    /// A stage is named by the sequence number of the write that began
    /// it, unique per route: the last segment is always digits, so two
    /// routes' keys never collide whatever their names.
    pub fn counts(&self, route: &str, stage: u64) -> String {
        self.key(&format!("counts:{route}:{stage}"))
    }

    pub fn feedback(&self, hour: u64) -> String {
        self.key(&format!("feedback:{hour}"))
    }

    /// A cached answer, by the hex of its cache key.
    pub fn cache(&self, hex: &str) -> String {
        self.key(&format!("cache:{hex}"))
    }

    /// The `SCAN MATCH` pattern of this fleet's cached answers (the braces
    /// of the prefix escaped: they are glob characters only with `[`).
    pub fn cache_pattern(&self) -> String {
        let mut p = String::new();
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                p.push('\\');
            }
            p.push(c);
        }
        p.push_str("cache:*");
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_fleet_name_as_a_hash_tag() {
        let k = Keys::new("chat-gateway");
        assert_eq!(k.leader(), "cutover:{chat-gateway}:leader");
        assert_eq!(k.counts("chat", 7), "cutover:{chat-gateway}:counts:chat:7");
        assert_eq!(k.cache("ab"), "cutover:{chat-gateway}:cache:ab");
        assert_eq!(k.cache_pattern(), "cutover:{chat-gateway}:cache:*");
        assert_ne!(k.counts("a:1", 2), k.counts("a", 12));
    }
}
