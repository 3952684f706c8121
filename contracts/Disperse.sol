// SPDX-License-Identifier: MIT
// Pays many destinations of one ERC-20 token in one transaction, from the caller's own balance
// only: every transfer is `transferFrom(msg.sender, to[i], amounts[i])`, so the contract can
// never move tokens of anyone but whoever calls it, whatever allowances it holds. A hot wallet
// approves it once per token.
//
// The whole batch reverts if any transfer fails, so a batch either pays every destination or
// none. Tokens that return nothing from `transferFrom` (USDT on Ethereum) are accepted; a
// token that returns `false` fails the batch. The contract keeps no state and holds no funds.
pragma solidity ^0.8.20;

contract Disperse {
    /// The `index`th transfer of the batch failed (reverted, or returned something other than
    /// true); nothing in the batch was paid.
    error TransferFailed(uint256 index);
    /// `to` and `amounts` differ in length.
    error LengthMismatch();
    /// `token` has no code: a call to it would "succeed" and pay no one.
    error NotAContract();
    /// A destination is not a clean 20-byte address; it is refused rather than truncated.
    error BadAddress(uint256 index);

    function disperse(address token, address[] calldata to, uint256[] calldata amounts) external {
        uint256 n = to.length;
        if (n != amounts.length) revert LengthMismatch();
        if (token.code.length == 0) revert NotAContract();
        bytes4 failed = TransferFailed.selector;
        bytes4 badAddress = BadAddress.selector;
        assembly {
            // The call's arguments are built in scratch memory past the free pointer, once
            // for the selector and the sender, then per destination.
            let m := mload(0x40)
            // transferFrom(address,address,uint256)
            mstore(m, 0x23b872dd00000000000000000000000000000000000000000000000000000000)
            mstore(add(m, 0x04), caller())
            for { let i := 0 } lt(i, n) { i := add(i, 1) } {
                let dest := calldataload(add(to.offset, shl(5, i)))
                if shr(160, dest) {
                    mstore(0x00, badAddress)
                    mstore(0x04, i)
                    revert(0x00, 0x24)
                }
                mstore(add(m, 0x24), dest)
                mstore(add(m, 0x44), calldataload(add(amounts.offset, shl(5, i))))
                mstore(0x00, 0)
                let ok := call(gas(), token, 0, m, 0x64, 0x00, 0x20)
                // Success is a call that did not revert and returned either nothing or a
                // word equal to 1 (true).
                let returned := returndatasize()
                let fine := and(ok, or(iszero(returned), and(gt(returned, 31), eq(mload(0x00), 1))))
                if iszero(fine) {
                    mstore(0x00, failed)
                    mstore(0x04, i)
                    revert(0x00, 0x24)
                }
            }
        }
    }
}
