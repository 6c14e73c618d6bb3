//! Layer keys: what a build's cache is addressed by.
//!
//! The key of the state before any step hashes the base (the built-in template's image id and
//! the layer of a template built on, if any); the key after step `i` hashes the key before it and
//! the step itself (its JSON, which names uploaded files by their key). So a key names one exact
//! sequence of steps on one exact base, and a changed step changes its key and every later one:
//! a build reuses the layers of the longest unchanged run of steps and runs the rest.

use super::model::BuildStep;

/// Prefix of every hash, so keys of other kinds never collide with these.
const DOMAIN: &str = "platinum template layer v1";

/// The key before any step: 64 hex digits.
pub fn base_key(base_image: &str, base_layer: Option<&str>) -> String {
    let mut h = blake3::Hasher::new();
    h.update(DOMAIN.as_bytes());
    h.update(b"\0base\0");
    h.update(base_image.as_bytes());
    h.update(b"\0");
    h.update(base_layer.unwrap_or("").as_bytes());
    h.finalize().to_hex().to_string()
}

/// The key after `step`, given the key before it.
pub fn step_key(before: &str, step: &BuildStep) -> String {
    let mut h = blake3::Hasher::new();
    h.update(DOMAIN.as_bytes());
    h.update(b"\0step\0");
    h.update(before.as_bytes());
    h.update(b"\0");
    // `force` says how to build, not what: it is not part of the key.
    h.update(
        serde_json::to_string(&step.action)
            .expect("steps serialize")
            .as_bytes(),
    );
    h.finalize().to_hex().to_string()
}

/// The key after each step, in order.
pub fn chain(base: &str, steps: &[BuildStep]) -> Vec<String> {
    let mut keys = Vec::with_capacity(steps.len());
    let mut before = base.to_string();
    for step in steps {
        let key = step_key(&before, step);
        keys.push(key.clone());
        before = key;
    }
    keys
}

/// How many leading steps a build takes from cache: the steps up to the last disk step whose
/// layer exists (`has_layer`), stopping before the first forced step (all of them with
/// `force_all`).
pub fn cached_prefix(
    steps: &[BuildStep],
    keys: &[String],
    force_all: bool,
    has_layer: impl Fn(&str) -> bool,
) -> usize {
    if force_all {
        return 0;
    }
    let usable = steps.iter().position(|s| s.force).unwrap_or(steps.len());
    (0..usable)
        .rev()
        .find(|&i| steps[i].action.changes_disk() && has_layer(&keys[i]))
        .map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::super::model::StepAction;
    use super::*;

    fn run(cmd: &str) -> BuildStep {
        BuildStep {
            action: StepAction::Run {
                command: cmd.into(),
                user: None,
            },
            force: false,
        }
    }

    fn env(k: &str) -> BuildStep {
        BuildStep {
            action: StepAction::Env {
                vars: [(k.to_string(), "1".to_string())].into(),
            },
            force: false,
        }
    }

    #[test]
    fn a_changed_step_changes_its_key_and_every_later_one() {
        let base = base_key("img", None);
        let a = chain(&base, &[run("a"), run("b"), run("c")]);
        let b = chain(&base, &[run("a"), run("B"), run("c")]);
        assert_eq!(a[0], b[0]);
        assert_ne!(a[1], b[1]);
        assert_ne!(a[2], b[2]);
        assert_ne!(chain(&base_key("img2", None), &[run("a")])[0], a[0]);
        assert_ne!(base_key("img", Some("l")), base);
        assert_eq!(a[0].len(), 64);
        let mut forced = run("a");
        forced.force = true;
        assert_eq!(
            chain(&base, &[forced])[0],
            a[0],
            "force is not part of the key"
        );
    }

    #[test]
    fn the_cache_covers_up_to_the_last_layer_that_exists() {
        let steps = [run("a"), env("X"), run("b"), env("Y")];
        let keys = chain("k", &steps);
        let all = |_: &str| true;
        assert_eq!(
            cached_prefix(&steps, &keys, false, all),
            3,
            "a trailing env step runs"
        );
        assert_eq!(cached_prefix(&steps, &keys, true, all), 0);
        let first_only = |k: &str| k == keys[0];
        assert_eq!(cached_prefix(&steps, &keys, false, first_only), 1);
        assert_eq!(cached_prefix(&steps, &keys, false, |_| false), 0);
        let mut forced = steps.to_vec();
        forced[2].force = true;
        assert_eq!(cached_prefix(&forced, &keys, false, all), 1);
    }
}
