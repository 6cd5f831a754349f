"""netrazor.methods"""
