"""netrazor.measure"""
