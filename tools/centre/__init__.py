"""Beyond the hub's link: a throwaway broker, the reference response centre, a cuttable network."""
