"""broker-gateway: gRPC gateway to brokers (built-in paper broker; Alpaca later) with
accounts, a balance guard before every order, millisecond order timing, and trade
import deduplicated by broker trade id."""
