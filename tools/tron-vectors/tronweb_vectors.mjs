// Tron transaction vectors made offline with TronWeb, an implementation independent of ours:
// TronWeb's own protobuf encoder (txJsonToPb), ABI encoder, address codec and signer.
//
//   cd tools/tron-vectors && npm ci && node tronweb_vectors.mjs > ../../tests/fixtures/tron/tronweb.json
//
// Deterministic (a seeded generator), no network: transactions are described as the node's
// JSON (`raw_data` with hex addresses), serialized by TronWeb, hashed and signed by TronWeb.
import { utils } from 'tronweb';

// mulberry32: small, seeded, reproducible.
function rng(seed) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = rng(20261123);
const hex = (bytes) => Array.from({ length: bytes }, () => Math.floor(rand() * 256).toString(16).padStart(2, '0')).join('');
const pick = (list) => list[Math.floor(rand() * list.length)];
const bigHex = (digits) => BigInt('0x' + hex(digits / 2) || '0');

const TOKENS = ['TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t', 'TEkxiTehnzSmSe2XqrBj4w32RUN966rdz8', 'TXYZopYRdj2D9XRtbG411XZZ3kM5VkAeBf'];
const toHexAddress = (b58) => utils.address.toHex(b58);

const cases = [];
for (let i = 0; i < 24; i++) {
  const key = hex(32);
  const toKey = hex(32);
  const owner = utils.crypto.pkToAddress(key);
  const to = utils.crypto.pkToAddress(toKey);
  const blockId = BigInt(1 + Math.floor(rand() * 80_000_000)).toString(16).padStart(16, '0') + hex(24);
  const timestamp = 1_700_000_000_000 + Math.floor(rand() * 1e11);
  const expiration = timestamp + pick([60_000, 120_000, 600_000, 3_600_000, 86_400_000]);
  const rawData = {
    ref_block_bytes: blockId.slice(12, 16),
    ref_block_hash: blockId.slice(16, 32),
    expiration,
    timestamp,
  };
  let kase;
  if (i % 6 === 5) {
    const sun = pick([1, 1_000_000, Math.floor(rand() * 1e15) + 1]);
    rawData.contract = [{
      type: 'TransferContract',
      parameter: { value: { owner_address: toHexAddress(owner), to_address: toHexAddress(to), amount: sun },
        type_url: 'type.googleapis.com/protocol.TransferContract' },
    }];
    kase = { kind: 'trx', amount: String(sun), fee_limit: 0 };
  } else {
    const token = TOKENS[i % TOKENS.length];
    const amount = pick([1n, 999_999n, 1_000_000n, 200_000_000_000n, bigHex(16) + 1n, bigHex(32) + 1n]);
    const feeLimit = pick([1_000_000, 10_000_000, 30_000_000, 100_000_000, 15_000_000_000]);
    const params = utils.abi.encodeParams(['address', 'uint256'], [toHexAddress(to), amount.toString()]);
    rawData.fee_limit = feeLimit;
    rawData.contract = [{
      type: 'TriggerSmartContract',
      parameter: { value: { owner_address: toHexAddress(owner), contract_address: toHexAddress(token),
        data: 'a9059cbb' + params.replace(/^0x/, ''), call_value: 0 },
        type_url: 'type.googleapis.com/protocol.TriggerSmartContract' },
    }];
    kase = { kind: 'trc20', token, amount: amount.toString(), fee_limit: feeLimit };
  }
  const tx = { visible: false, raw_data: rawData };
  const pb = utils.transaction.txJsonToPb(tx);
  tx.raw_data_hex = utils.transaction.txPbToRawDataHex(pb).toLowerCase();
  tx.txID = utils.transaction.txPbToTxID(pb).replace(/^0x/, '');
  utils.crypto.signTransaction(key, tx);
  cases.push({
    ...kase, key, owner, to, block_id: blockId, timestamp, expiration,
    raw_data_hex: tx.raw_data_hex, txid: tx.txID, signature: tx.signature[0].toLowerCase(),
  });
}
console.log(JSON.stringify({ generator: 'tronweb 6.0.4 (offline)', cases }, null, 1));
