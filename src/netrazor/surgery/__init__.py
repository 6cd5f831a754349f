"""netrazor.surgery"""
