"""ml-scorer: indicators (RSI, ATR, Bollinger position, 1- and 5-day change) and
explainable behavioural bias tags (FOMO, PANIC, DISCIPLINE) for imported trades, with
post-trade reflections for the coach."""
