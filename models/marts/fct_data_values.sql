{#- The one long fact every indicator reads: one row per data element, category and attribute
    option combo, org unit, period and source. -#}
select * from {{ ref('int_data_values_unified') }}
