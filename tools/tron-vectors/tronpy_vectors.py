"""Tron transaction vectors made offline with tronpy, an implementation independent of ours.

    python3 -m venv /tmp/tronvenv
    /tmp/tronvenv/bin/pip install -r tools/tron-vectors/requirements.txt
    /tmp/tronvenv/bin/python tools/tron-vectors/tronpy_vectors.py > tests/fixtures/tron/tronpy.json

Deterministic: keys, amounts, fee limits, times and reference blocks come from a seeded RNG, so
the output only changes if tronpy's encoding does. No network access (tronpy builds offline
from a given reference block id and signs the txID with `sign_msg_hash`).
"""

import hashlib
import json
import random

from tronpy import Tron
from tronpy.contract import Contract
from tronpy.keys import PrivateKey
from tronpy.proto.transaction import _raw_data_to_protobuf

TRANSFER_ABI = [
    {
        "name": "transfer",
        "type": "function",
        "stateMutability": "nonpayable",
        "inputs": [
            {"name": "_to", "type": "address"},
            {"name": "_value", "type": "uint256"},
        ],
        "outputs": [{"name": "", "type": "bool"}],
    }
]
TOKENS = [
    "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t",  # mainnet USDT
    "TEkxiTehnzSmSe2XqrBj4w32RUN966rdz8",  # mainnet USDC
    "TXYZopYRdj2D9XRtbG411XZZ3kM5VkAeBf",  # Nile USDT
]


def key(rng):
    return PrivateKey(bytes(rng.getrandbits(8) for _ in range(32)))


def finish(tx, priv, case):
    raw_hex = _raw_data_to_protobuf(tx._raw_data).SerializeToString().hex()
    txid = hashlib.sha256(bytes.fromhex(raw_hex)).hexdigest()
    assert txid == tx.txid, (txid, tx.txid)
    sig = priv.sign_msg_hash(bytes.fromhex(txid))
    case.update(raw_data_hex=raw_hex, txid=txid, signature=sig.hex())
    return case


def main():
    rng = random.Random(20261123)
    client = Tron()  # no I/O until asked
    cases = []
    for i in range(24):
        priv, to = key(rng), key(rng)
        owner = priv.public_key.to_base58check_address()
        to_addr = to.public_key.to_base58check_address()
        block_id = "%016x" % rng.randrange(1, 80_000_000) + "%048x" % rng.getrandbits(192)
        timestamp = 1_700_000_000_000 + rng.randrange(0, 10**11)
        expiration = timestamp + rng.choice([60_000, 120_000, 600_000, 3_600_000, 86_400_000])
        if i % 6 == 5:
            sun = rng.choice([1, 1_000_000, rng.randrange(1, 10**15)])
            tb = client.trx.transfer(owner, to_addr, sun)
            tb._raw_data["timestamp"] = timestamp
            tb._raw_data["expiration"] = expiration
            tx = tb.build(offline=True, ref_block_id=block_id)
            case = {"kind": "trx", "amount": str(sun), "fee_limit": 0}
        else:
            token = TOKENS[i % len(TOKENS)]
            amount = rng.choice([1, 999_999, 1_000_000, 200_000_000_000, rng.randrange(1, 2**64), rng.randrange(1, 2**128)])
            fee_limit = rng.choice([1_000_000, 10_000_000, 30_000_000, 100_000_000, 15_000_000_000])
            contract = Contract(addr=token, abi=TRANSFER_ABI, client=client)
            tb = contract.functions.transfer(to_addr, amount).with_owner(owner).fee_limit(fee_limit)
            tb._raw_data["timestamp"] = timestamp
            tb._raw_data["expiration"] = expiration
            tx = tb.build(offline=True, ref_block_id=block_id)
            case = {"kind": "trc20", "token": token, "amount": str(amount), "fee_limit": fee_limit}
        case.update(
            key=priv.hex(),
            owner=owner,
            to=to_addr,
            block_id=block_id,
            timestamp=timestamp,
            expiration=expiration,
        )
        cases.append(finish(tx, priv, case))
    print(json.dumps({"generator": "tronpy 0.6.2 (offline)", "cases": cases}, indent=1))


if __name__ == "__main__":
    main()
