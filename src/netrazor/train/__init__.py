"""netrazor.train"""
