//! Key selection: the set of report keys an analysis is asked for ([`KeySet`]) and what the
//! engines must compute for it ([`Needs`]): which channels, which Welford statistics, and
//! whether the Hessian pass, the label sampling, the per-input spectra and the per-tensor
//! trace bounds run at all (docs/design.md §1).

use super::channels::{Base, Channel, NUM_BASES};
use super::Bounds;
use crate::family::FamilyKind;
use crate::report::{Key, NUM_KEYS};
use crate::{Error, Result};
use std::str::FromStr;

/// A set of report keys ([`Key`]); [`KeySet::ALL`] (every key) by default.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeySet(u64);

impl Default for KeySet {
    fn default() -> Self {
        KeySet::ALL
    }
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter().map(Key::name)).finish()
    }
}

impl KeySet {
    /// Every key.
    pub const ALL: KeySet = KeySet((1 << NUM_KEYS) - 1);
    /// No key.
    pub const EMPTY: KeySet = KeySet(0);

    /// Whether the set holds every key.
    pub fn is_all(self) -> bool {
        self == KeySet::ALL
    }

    /// Whether the set holds no key.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether `key` is in the set.
    pub fn contains(self, key: Key) -> bool {
        self.0 & (1 << key.index()) != 0
    }

    /// Adds `key`.
    pub fn insert(&mut self, key: Key) {
        self.0 |= 1 << key.index();
    }

    /// The keys of the set, in [`Key::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Key> {
        Key::ALL.into_iter().filter(move |k| self.contains(*k))
    }

    /// Number of keys in the set.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The keys of `self` that are not in `other`.
    pub fn minus(self, other: KeySet) -> KeySet {
        KeySet(self.0 & !other.0)
    }

    /// The keys of both sets.
    pub fn intersection(self, other: KeySet) -> KeySet {
        KeySet(self.0 & other.0)
    }

    /// The keys of a comma-separated list of names (`"fisher,var1"`) or `"all"`; an unknown
    /// name is an error that lists the valid ones.
    pub fn parse(list: &str) -> Result<KeySet> {
        if list.trim().eq_ignore_ascii_case("all") {
            return Ok(KeySet::ALL);
        }
        KeySet::from_names(list.split(','))
    }

    /// The keys with these names; an unknown or empty name, or no name at all, is an error
    /// that lists the valid ones.
    pub fn from_names<I, S>(names: I) -> Result<KeySet>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = KeySet::EMPTY;
        for name in names {
            let name = name.as_ref().trim();
            let key = Key::from_name(name).ok_or_else(|| {
                let valid: Vec<&str> = Key::ALL.iter().map(|k| k.name()).collect();
                Error::Input(format!(
                    "unknown key '{name}': the keys are {} (or 'all')",
                    valid.join(", ")
                ))
            })?;
            set.insert(key);
        }
        if set.is_empty() {
            return Err(Error::Input(
                "no keys were given: name at least one key, e.g. --keys fisher, or all".into(),
            ));
        }
        Ok(set)
    }
}

impl FromIterator<Key> for KeySet {
    fn from_iter<I: IntoIterator<Item = Key>>(iter: I) -> Self {
        let mut set = KeySet::EMPTY;
        for k in iter {
            set.insert(k);
        }
        set
    }
}

impl FromStr for KeySet {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        KeySet::parse(s)
    }
}

/// The keys a report holds for this family, labels and bounds mode, out of `selected`: the
/// available ones ([`Key::is_available`]), without the bound keys under [`Bounds::None`].
pub fn report_keys(selected: KeySet, kind: FamilyKind, labels: bool, bounds: Bounds) -> KeySet {
    selected
        .iter()
        .filter(|k| k.is_available(kind, labels) && (bounds.keys() || !k.is_bound()))
        .collect()
}

/// Checks an explicit selection against the family, labels and bounds mode: a key that such
/// a run cannot compute is an error that says why. The default selection ([`KeySet::ALL`])
/// means "every key that exists here" and always passes.
pub fn check_selection(
    selected: KeySet,
    kind: FamilyKind,
    labels: bool,
    bounds: Bounds,
) -> Result<()> {
    if selected.is_all() {
        return Ok(());
    }
    if selected.is_empty() {
        return Err(Error::Input(
            "no keys were selected: select at least one key".into(),
        ));
    }
    for key in selected.iter() {
        if !key.is_available(kind, labels) {
            let why = match key {
                Key::Ef | Key::VarEf | Key::EfBias => {
                    "it needs the data labels: give --labels (labels= in Python)".to_string()
                }
                _ => format!("it does not exist for the {} family", kind.name()),
            };
            return Err(Error::Input(format!(
                "key '{}' cannot be computed: {why}",
                key.name()
            )));
        }
        if key.is_bound() && !bounds.keys() {
            return Err(Error::Input(format!(
                "key '{}' is a bound, but the bounds are off (--bounds none): drop --bounds none \
                 or the key",
                key.name()
            )));
        }
    }
    Ok(())
}

/// What the engines compute for a set of report keys (MATH §6.5: every key is a channel, a
/// Welford statistic, or derived from them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Needs {
    /// The keys of the report.
    pub keys: KeySet,
    /// The channel keys to accumulate: the report's channel keys and those its derived keys
    /// need.
    pub channels: KeySet,
    /// The per-entry Welford statistics of the Fisher over inputs (`var_x`, `var_joint*`).
    pub fisher_welford: bool,
    /// The per-entry Welford statistics of the empirical Fisher over inputs (`var_ef`).
    pub ef_welford: bool,
    /// The per-unit bases the channels read.
    pub bases: [bool; NUM_BASES],
    /// Whether the output-Hessian diagonals Hd_l are needed.
    pub hessian: bool,
    /// Whether labels are sampled (the Monte-Carlo keys).
    pub samples: bool,
    /// Whether the family's per-input spectra are computed (the bound keys, the trace bounds).
    pub spectra: bool,
    /// Whether the per-tensor trace bounds of SUMMARY.json are computed (the theory hook).
    pub tensor_bounds: bool,
}

/// The channel keys a derived key is computed from.
fn derived_from(key: Key) -> &'static [Key] {
    match key {
        Key::VarJoint1 => &[Key::Var1],
        Key::VarJoint2 => &[Key::Var2],
        Key::WOpt | Key::VarOpt => &[Key::Var1, Key::Var2, Key::Cov12],
        Key::EfBias => &[Key::Ef, Key::Fisher],
        _ => &[],
    }
}

impl Needs {
    /// What the report keys `keys` need (already filtered by [`report_keys`]); the trace bounds
    /// run with [`Bounds::All`] when a bound key is reported.
    pub fn new(keys: KeySet, bounds: Bounds) -> Needs {
        let mut channels = KeySet::EMPTY;
        for key in keys.iter() {
            if key.channel().is_some() {
                channels.insert(key);
            }
            for &k in derived_from(key) {
                channels.insert(k);
            }
        }
        let fisher_welford = [Key::VarX, Key::VarJoint1, Key::VarJoint2]
            .iter()
            .any(|k| keys.contains(*k));
        let ef_welford = keys.contains(Key::VarEf);
        let mut bases = [false; NUM_BASES];
        // The Welford statistics read the per-input Fisher (empirical Fisher) of each entry:
        // their channel's base, even when that key itself is not reported.
        let welford = [(fisher_welford, Key::Fisher), (ef_welford, Key::Ef)];
        let welford_channels = welford.iter().filter(|w| w.0).map(|w| w.1);
        for c in channels
            .iter()
            .chain(welford_channels)
            .filter_map(Key::channel)
        {
            bases[c.base.index()] = true;
        }
        let any = |list: &[Base]| list.iter().any(|b| bases[b.index()]);
        let tensor_bounds = bounds.tensors() && keys.iter().any(Key::is_bound);
        let sampled = [
            Base::ScoreSqMean,
            Base::ScoreSqVar,
            Base::ScoreSqVarVar,
            Base::NegHessMean,
            Base::HessRVar,
            Base::HessRVarVar,
        ];
        Needs {
            keys,
            channels,
            fisher_welford,
            ef_welford,
            bases,
            hessian: tensor_bounds
                || any(&[
                    Base::W,
                    Base::HdNorm2,
                    Base::Third,
                    Base::NegHessMean,
                    Base::HessRVar,
                    Base::HessRVarVar,
                ]),
            samples: any(&sampled),
            spectra: tensor_bounds || channels.iter().any(Key::is_bound),
            tensor_bounds,
        }
    }

    /// What the report keys need for a family: [`Needs::new`] without the channels whose
    /// per-input scalar is identically 0 for the family ([`InputScalar::vanishes`]: the
    /// categorical family's lower bounds), which stay 0 without being accumulated.
    ///
    /// [`InputScalar::vanishes`]: super::channels::InputScalar::vanishes
    pub fn for_family(keys: KeySet, bounds: Bounds, kind: FamilyKind) -> Needs {
        let vanishing: KeySet = keys
            .iter()
            .filter(|k| k.channel().is_some_and(|c| c.scalar.vanishes(kind)))
            .collect();
        let mut needs = Needs::new(keys.minus(vanishing), bounds);
        needs.keys = keys;
        needs
    }

    /// Whether the per-unit base is needed.
    pub fn base(&self, base: Base) -> bool {
        self.bases[base.index()]
    }

    /// The channels to accumulate, grouped by power in [`Key::ALL`] order:
    /// (p, [(key slot, channel)]).
    pub fn channel_groups(&self) -> Vec<(u32, Vec<(usize, Channel)>)> {
        channel_groups_of(self.channels)
    }
}

/// The channels of `keys`, grouped by power in [`Key::ALL`] order: (p, [(key slot, channel)]).
pub(crate) fn channel_groups_of(keys: KeySet) -> Vec<(u32, Vec<(usize, Channel)>)> {
    let mut groups: Vec<(u32, Vec<(usize, Channel)>)> = Vec::new();
    for key in keys.iter() {
        if let Some(c) = key.channel() {
            match groups.iter_mut().find(|g| g.0 == c.power) {
                Some(g) => g.1.push((key.index(), c)),
                None => groups.push((c.power, vec![(key.index(), c)])),
            }
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_lists_and_errors() {
        let s = KeySet::parse("fisher, var1").unwrap();
        assert_eq!(s.iter().collect::<Vec<_>>(), [Key::Fisher, Key::Var1]);
        assert!(KeySet::parse("all").unwrap().is_all());
        let e = KeySet::parse("fisher,fishr").unwrap_err().to_string();
        assert!(
            e.contains("unknown key 'fishr'") && e.contains("var_opt"),
            "{e}"
        );
        assert!(KeySet::parse("").is_err());
        assert_eq!(KeySet::ALL.len(), NUM_KEYS);
    }

    /// `--keys fisher` is one channel, no Hessian pass, no sampling, no spectra.
    #[test]
    fn fisher_alone_needs_one_channel() {
        let n = Needs::new(KeySet::from_iter([Key::Fisher]), Bounds::All);
        assert_eq!(n.channels.iter().collect::<Vec<_>>(), [Key::Fisher]);
        assert!(!n.hessian && !n.samples && !n.spectra && !n.tensor_bounds);
        assert!(!n.fisher_welford && !n.ef_welford);
        let n = Needs::new(KeySet::from_iter([Key::VarOpt]), Bounds::All);
        assert_eq!(
            n.channels.iter().collect::<Vec<_>>(),
            [Key::Var1, Key::Var2, Key::Cov12]
        );
        assert!(n.hessian && !n.samples && !n.spectra);
        let n = Needs::new(KeySet::from_iter([Key::Mc1, Key::VarX]), Bounds::All);
        assert!(n.samples && !n.hessian && n.fisher_welford && n.base(Base::Q));
        let n = Needs::new(KeySet::from_iter([Key::VarEf]), Bounds::All);
        assert!(n.ef_welford && n.base(Base::Ef) && n.channels.is_empty());
        let n = Needs::new(KeySet::from_iter([Key::UbFisher]), Bounds::All);
        assert!(n.spectra && n.tensor_bounds && n.hessian);
        // The Welford statistics read the Fisher's (empirical Fisher's) base even when that
        // key is not selected.
        let base = |k: Key| k.channel().expect("a channel").base;
        for k in [Key::VarX, Key::VarJoint1, Key::VarJoint2] {
            let n = Needs::new(KeySet::from_iter([k]), Bounds::All);
            assert!(n.fisher_welford && n.base(base(Key::Fisher)), "{k:?}");
        }
        let n = Needs::new(KeySet::from_iter([Key::VarEf]), Bounds::All);
        assert!(n.ef_welford && n.base(base(Key::Ef)));
        let n = Needs::new(KeySet::from_iter([Key::UbFisher]), Bounds::Keys);
        assert!(n.spectra && !n.tensor_bounds && !n.hessian);
    }

    #[test]
    fn selection_errors_say_why() {
        let c = FamilyKind::Categorical;
        let g = FamilyKind::Gaussian { sigma2: 1.0 };
        let ef = KeySet::from_iter([Key::Ef]);
        assert!(check_selection(ef, c, false, Bounds::All)
            .unwrap_err()
            .to_string()
            .contains("--labels"));
        assert!(check_selection(ef, c, true, Bounds::All).is_ok());
        let thm = KeySet::from_iter([Key::UbFisherThm52]);
        assert!(check_selection(thm, g, false, Bounds::All)
            .unwrap_err()
            .to_string()
            .contains("gaussian"));
        let ub = KeySet::from_iter([Key::UbFisher]);
        assert!(check_selection(ub, c, false, Bounds::None)
            .unwrap_err()
            .to_string()
            .contains("--bounds none"));
        assert!(check_selection(KeySet::ALL, g, false, Bounds::None).is_ok());
    }
}
