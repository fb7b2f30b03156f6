//! delegate.xyz v2 delegations: wallets that let a member's wallets act for
//! them.
//!
//! Holders keep valuable tokens in a cold wallet and link only a hot one.
//! The cold wallet records in the DelegateRegistry that the hot wallet may
//! act for it; a rule with `delegations` set then counts the cold wallet's
//! tokens for whoever linked the hot wallet, without the cold wallet ever
//! signing anything for us.

use std::collections::{BTreeMap, BTreeSet};

use alloy_primitives::{address, Address, B256, U256};

/// DelegateRegistry v2's address, the same on every chain it is deployed to
/// (<https://docs.delegate.xyz>); a chain's `delegate_registry` overrides it.
pub const DELEGATE_REGISTRY_V2: Address = address!("00000000000000447e69651d841bD8D104Bed493");

/// What a delegation covers (the registry's `DelegationType`, without
/// `NONE`, which marks an empty or revoked slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DelegationKind {
    /// Every contract.
    All,
    /// Every token of one contract.
    Contract,
    /// One ERC-721 token.
    Erc721,
    /// Up to an amount of one ERC-20 token.
    Erc20,
    /// Up to an amount of one ERC-1155 token id.
    Erc1155,
}

impl DelegationKind {
    /// From the registry's `uint8`; `None` for `NONE` and for values this
    /// version does not know, which therefore grant nothing.
    pub fn from_registry(value: u8) -> Option<Self> {
        match value {
            1 => Some(DelegationKind::All),
            2 => Some(DelegationKind::Contract),
            3 => Some(DelegationKind::Erc721),
            4 => Some(DelegationKind::Erc20),
            5 => Some(DelegationKind::Erc1155),
            _ => None,
        }
    }

    pub fn to_registry(self) -> u8 {
        match self {
            DelegationKind::All => 1,
            DelegationKind::Contract => 2,
            DelegationKind::Erc721 => 3,
            DelegationKind::Erc20 => 4,
            DelegationKind::Erc1155 => 5,
        }
    }
}

/// One delegation as the registry's `getIncomingDelegations` returns it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Delegation {
    pub kind: DelegationKind,
    /// The delegate: the wallet that may act.
    pub to: Address,
    /// The delegator: the wallet whose tokens it may act for.
    pub from: Address,
    /// Zero for full rights. Anything else names a specific right (voting,
    /// claiming an airdrop, ...) that does not extend to token gating.
    pub rights: B256,
    /// Zero for [`DelegationKind::All`].
    pub contract: Address,
    /// For ERC-721 and ERC-1155 delegations.
    pub token_id: U256,
    /// For ERC-20 and ERC-1155 delegations.
    pub amount: U256,
}

impl Delegation {
    fn new(kind: DelegationKind, from: Address, to: Address) -> Self {
        Delegation {
            kind,
            to,
            from,
            rights: B256::ZERO,
            contract: Address::ZERO,
            token_id: U256::ZERO,
            amount: U256::ZERO,
        }
    }

    /// `from` lets `to` act for it on every contract.
    pub fn all(from: Address, to: Address) -> Self {
        Self::new(DelegationKind::All, from, to)
    }

    /// `from` lets `to` act for it on every token of `contract`.
    pub fn contract(from: Address, to: Address, contract: Address) -> Self {
        Delegation {
            contract,
            ..Self::new(DelegationKind::Contract, from, to)
        }
    }

    /// `from` lets `to` act for it with ERC-721 token `token_id`.
    pub fn erc721(from: Address, to: Address, contract: Address, token_id: U256) -> Self {
        Delegation {
            contract,
            token_id,
            ..Self::new(DelegationKind::Erc721, from, to)
        }
    }

    /// `from` lets `to` act for it with up to `amount` of an ERC-20 token.
    pub fn erc20(from: Address, to: Address, contract: Address, amount: U256) -> Self {
        Delegation {
            contract,
            amount,
            ..Self::new(DelegationKind::Erc20, from, to)
        }
    }

    /// `from` lets `to` act for it with up to `amount` of ERC-1155 id
    /// `token_id`.
    pub fn erc1155(
        from: Address,
        to: Address,
        contract: Address,
        token_id: U256,
        amount: U256,
    ) -> Self {
        Delegation {
            contract,
            token_id,
            amount,
            ..Self::new(DelegationKind::Erc1155, from, to)
        }
    }

    /// The same delegation limited to a specific right.
    pub fn with_rights(self, rights: B256) -> Self {
        Delegation { rights, ..self }
    }
}

/// Which asset a rule counts; it decides which delegation kinds apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asset {
    Erc20,
    Erc721,
    Erc1155,
}

/// What a member's incoming delegations grant toward one rule's contract.
#[derive(Debug, Default)]
pub(crate) struct Granted {
    /// Delegators whose whole holdings of the contract count (ALL, or
    /// CONTRACT for this contract).
    pub full: BTreeSet<Address>,
    /// ERC-20 delegators and the most of their balance that counts.
    pub erc20: BTreeMap<Address, U256>,
    /// ERC-721 (delegator, token id): the token counts if the delegator
    /// owns it.
    pub erc721: BTreeSet<(Address, U256)>,
    /// ERC-1155 (delegator, token id) and the most of that balance that
    /// counts.
    pub erc1155: BTreeMap<(Address, U256), U256>,
}

impl Granted {
    /// Sorts the delegations to `wallets` by what they grant for `asset` on
    /// `contract`, so that each delegator's tokens count at most once.
    pub fn collect<'a>(
        delegations: impl IntoIterator<Item = &'a Delegation>,
        wallets: &[Address],
        contract: Address,
        asset: Asset,
    ) -> Granted {
        let mut g = Granted::default();
        for d in delegations {
            // A member's own wallet is already counted in full; a delegation
            // to a wallet we did not ask about is not the member's.
            if d.rights != B256::ZERO || wallets.contains(&d.from) || !wallets.contains(&d.to) {
                continue;
            }
            let here = d.contract == contract;
            match d.kind {
                DelegationKind::All => {
                    g.full.insert(d.from);
                }
                DelegationKind::Contract if here => {
                    g.full.insert(d.from);
                }
                // Delegations of the same tokens to two of the member's
                // wallets cover the same tokens, so the larger one counts,
                // not their sum.
                DelegationKind::Erc20 if here && asset == Asset::Erc20 => {
                    let cap = g.erc20.entry(d.from).or_default();
                    *cap = (*cap).max(d.amount);
                }
                DelegationKind::Erc721 if here && asset == Asset::Erc721 => {
                    g.erc721.insert((d.from, d.token_id));
                }
                DelegationKind::Erc1155 if here && asset == Asset::Erc1155 => {
                    let cap = g.erc1155.entry((d.from, d.token_id)).or_default();
                    *cap = (*cap).max(d.amount);
                }
                _ => {}
            }
        }
        // A delegator counted in full would otherwise count again through a
        // narrower delegation of some of the same tokens.
        let full = &g.full;
        g.erc20.retain(|from, _| !full.contains(from));
        g.erc721.retain(|(from, _)| !full.contains(from));
        g.erc1155.retain(|(from, _), _| !full.contains(from));
        g
    }

    /// How many distinct delegators grant anything.
    pub fn delegators(&self) -> usize {
        let mut all: BTreeSet<Address> = self.full.clone();
        all.extend(self.erc20.keys());
        all.extend(self.erc721.iter().map(|(from, _)| *from));
        all.extend(self.erc1155.keys().map(|(from, _)| *from));
        all.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: Address = Address::repeat_byte(0xc1);
    const OTHER: Address = Address::repeat_byte(0xc2);
    const HOT: Address = Address::repeat_byte(0x01);
    const HOT2: Address = Address::repeat_byte(0x02);
    const COLD: Address = Address::repeat_byte(0x0c);

    #[test]
    fn registry_kinds_round_trip_and_none_grants_nothing() {
        for v in 1..=5u8 {
            let kind = DelegationKind::from_registry(v).expect("known kind");
            assert_eq!(kind.to_registry(), v);
        }
        assert_eq!(DelegationKind::from_registry(0), None);
        assert_eq!(DelegationKind::from_registry(6), None);
    }

    #[test]
    fn only_full_rights_on_this_contract_and_asset_count() {
        let ds = [
            Delegation::contract(COLD, HOT, OTHER),
            Delegation::all(Address::repeat_byte(0x0d), HOT).with_rights(B256::repeat_byte(1)),
            Delegation::erc721(COLD, HOT, C, U256::from(7)),
            Delegation::erc20(COLD, HOT, OTHER, U256::from(5)),
        ];
        let g = Granted::collect(&ds, &[HOT], C, Asset::Erc20);
        assert_eq!(g.delegators(), 0, "{g:?}");
        let g = Granted::collect(&ds, &[HOT], C, Asset::Erc721);
        assert_eq!(g.erc721, [(COLD, U256::from(7))].into());
        assert!(g.full.is_empty());
    }

    #[test]
    fn a_delegator_counts_once_and_own_wallets_never_as_delegators() {
        let ds = [
            Delegation::erc20(COLD, HOT, C, U256::from(5)),
            Delegation::erc20(COLD, HOT2, C, U256::from(8)),
            Delegation::all(HOT2, HOT),
        ];
        let g = Granted::collect(&ds, &[HOT, HOT2], C, Asset::Erc20);
        assert_eq!(g.erc20, [(COLD, U256::from(8))].into());
        assert!(g.full.is_empty(), "HOT2 is the member's own: {g:?}");

        let ds = [
            Delegation::erc20(COLD, HOT, C, U256::from(5)),
            Delegation::contract(COLD, HOT2, C),
        ];
        let g = Granted::collect(&ds, &[HOT, HOT2], C, Asset::Erc20);
        assert_eq!(g.full, [COLD].into());
        assert!(g.erc20.is_empty(), "counted in full already: {g:?}");
        assert_eq!(g.delegators(), 1);
    }
}
