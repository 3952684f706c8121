"""Builds and signs N TRC-20 transfers offline with tronpy and prints transactions per second
(the baseline of `cargo bench --bench tron`). Usage: tronpy_bench.py N"""

import sys
import time

from tronpy import Tron
from tronpy.contract import Contract
from tronpy.keys import PrivateKey

ABI = [{"name": "transfer", "type": "function", "stateMutability": "nonpayable",
        "inputs": [{"name": "_to", "type": "address"}, {"name": "_value", "type": "uint256"}],
        "outputs": [{"name": "", "type": "bool"}]}]


def main():
    n = int(sys.argv[1])
    client = Tron()
    priv = PrivateKey(bytes.fromhex("8d596057e510b14cbb9bf24f88803a6d6dbd138dd303a62b175b9e6cc0f3f941"))
    owner = priv.public_key.to_base58check_address()
    usdt = Contract(addr="TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t", abi=ABI, client=client)
    block_id = "0000000004a8a5bf0c28cec1b94722af64b936976b4b76b0e179f773a6e0f3c0"
    started = time.perf_counter()
    for i in range(n):
        tb = usdt.functions.transfer("TUz4nTU75z5oK4pYaVipkSDQ3Bi2DXdQT8", 1_000_000 + i).with_owner(owner).fee_limit(30_000_000)
        tb._raw_data["timestamp"] = 1_766_453_046_721 + i
        tb._raw_data["expiration"] = 1_766_453_106_721 + i
        tx = tb.build(offline=True, ref_block_id=block_id)
        priv.sign_msg_hash(bytes.fromhex(tx.txid))
    print(n / (time.perf_counter() - started))


if __name__ == "__main__":
    main()
