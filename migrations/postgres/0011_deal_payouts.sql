-- Where a deal pays on chain: the seller's payouts and the buyer's refunds, when given.
ALTER TABLE deals ADD COLUMN seller_payout_address TEXT;
ALTER TABLE deals ADD COLUMN buyer_refund_address TEXT;
