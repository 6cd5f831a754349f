"""netrazor.quant"""
