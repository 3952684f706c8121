-- Hot wallet custody in the ledger: when treasuryd began to watch each (wallet, asset), at
-- which block its opening balance was read. The opening is posted under the ledger key
-- wallet-opening:{chain id}:{wallet}:{asset}; from then on inflows (wallet-inflow:…) and
-- payouts keep the wallet's account equal to its on-chain balance.
CREATE TABLE wallet_openings (
    network TEXT    NOT NULL,
    wallet  TEXT    NOT NULL,
    asset   TEXT    NOT NULL,
    block   BIGINT  NOT NULL CHECK (block >= 0),
    PRIMARY KEY (network, wallet, asset)
);
