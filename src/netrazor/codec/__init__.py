"""netrazor.codec"""
