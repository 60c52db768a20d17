"""Who is calling and what they may do: certificates, tokens, the auth interceptor."""
